package kafka

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none = valid
	}{
		{"ok", Config{Brokers: []string{"127.0.0.1:9092"}}, nil},
		{"no brokers", Config{}, []string{"no brokers", "TROUPE_BROKERS"}},
		{"bad broker", Config{Brokers: []string{"localhost"}}, []string{`"localhost" is not host:port`}},
		{"sasl", Config{Brokers: []string{"a:1"}, SASLMechanism: "GSSAPI"}, []string{"unknown SASL mechanism"}},
		{"sasl user", Config{Brokers: []string{"a:1"}, SASLMechanism: "scram-sha-512"}, []string{"needs a user", "needs a password", "TROUPE_SASL_PASSWORD"}},
		{"sasl ok", Config{Brokers: []string{"a:1"}, SASLMechanism: "scram-sha-512", SASLUser: "u", SASLPassword: "p"}, nil},
		{"all at once", Config{Brokers: []string{"x"}, TLSCertFile: "c.pem", SASLMechanism: "X"}, []string{"host:port", "SASL", "--tls-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestEmbeddedProduceConsume(t *testing.T) {
	e, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg := Config{Brokers: []string{e.Addr()}}
	cl, err := NewClient(ctx, cfg, kgo.AllowAutoTopicCreation(), kgo.ConsumeTopics("auto-created"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 1000
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Topic: "auto-created", Value: []byte{byte(i), byte(i >> 8)}}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll after %d records: %v", got, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if want := []byte{byte(got), byte(got >> 8)}; string(r.Value) != string(want) {
				t.Fatalf("record %d: value %v, want %v", got, r.Value, want)
			}
			got++
		})
	}
}

func TestEmbeddedRestartKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEmbedded(EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(e.Addr()[strings.LastIndexByte(e.Addr(), ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewClient(ctx, Config{Brokers: []string{e.Addr()}}, kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "kept", Value: []byte("v1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	e.Close()

	e, err = StartEmbedded(EmbeddedConfig{DataDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cl, err = NewClient(ctx, Config{Brokers: []string{e.Addr()}}, kgo.ConsumeTopics("kept"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "v1" {
		t.Fatalf("after restart: %d records", len(recs))
	}
}

func TestNewClientUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := NewClient(ctx, Config{Brokers: []string{"127.0.0.1:1"}})
	if err == nil {
		t.Fatal("no error for an unreachable broker")
	}
	for _, w := range []string{"cannot reach Kafka at 127.0.0.1:1", "TROUPE_BROKERS"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}
