package registry_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
)

// With Config.Auth, a client needs the write token (bearer, or basic auth
// user:token as Confluent's clients send it) to change anything; the read
// token may read, look schemas up and check compatibility; without a token
// every route answers 401 in the Confluent format.
func TestAuth(t *testing.T) {
	const write, read = "write-4c1f0b7d2a", "read-9e3a6d5c8b"
	c := newCluster(t)
	var logs syncBuf
	srv, err := registry.New(registry.Config{Kafka: kafka.Config{Brokers: c.ListenAddrs()}, Auth: auth.Tokens{Write: write, Read: read}}, zerolog.New(&logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	client := func(opts ...sr.ClientOpt) *sr.Client {
		cl, err := sr.NewClient(append([]sr.ClientOpt{sr.URLs(hs.URL)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	refused := func(what string, err error, status, code int) {
		t.Helper()
		var re *sr.ResponseError
		if !errors.As(err, &re) || re.StatusCode != status || re.ErrorCode != code {
			t.Errorf("%s: %v, want HTTP %d with error code %d", what, err, status, code)
		}
	}

	anon := client()
	_, err = anon.CreateSchema(ctx, "s-t.OrderPlaced", avro(orderV1))
	refused("register without a token", err, 401, 40101)
	_, err = anon.Subjects(ctx)
	refused("list without a token", err, 401, 40101)
	_, err = client(sr.BearerToken(write + "-not")).Subjects(ctx)
	refused("list with a wrong token", err, 401, 40101)

	ss, err := client(sr.BearerToken(write)).CreateSchema(ctx, "s-t.OrderPlaced", avro(orderV1))
	if err != nil {
		t.Fatalf("register with the bearer token: %v", err)
	}
	if _, err := client(sr.BasicAuth("svc", write)).CreateSchema(ctx, "s-t.OrderPlaced", avro(orderV2)); err != nil {
		t.Fatalf("register with basic auth svc:token: %v", err)
	}

	// user:token in the URL: net/http sends it as basic auth.
	inURL, err := sr.NewClient(sr.URLs("http://svc:" + write + "@" + strings.TrimPrefix(hs.URL, "http://")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inURL.Subjects(ctx); err != nil {
		t.Errorf("list with user:token in the URL: %v", err)
	}

	ro := client(sr.BasicAuth("reader", read))
	if subs, err := ro.Subjects(ctx); err != nil || len(subs) != 1 {
		t.Errorf("list with the read token: %v %v", subs, err)
	}
	if got, err := ro.LookupSchema(ctx, "s-t.OrderPlaced", avro(orderV1)); err != nil || got.ID != ss.ID {
		t.Errorf("look up with the read token: %+v %v, want id %d", got, err, ss.ID)
	}
	if res, err := ro.CheckCompatibility(ctx, "s-t.OrderPlaced", -1, avro(orderV2)); err != nil || !res.Is {
		t.Errorf("check compatibility with the read token: %+v %v", res, err)
	}
	_, err = ro.CreateSchema(ctx, "s-t.OrderPlaced", avro(orderRemoved))
	refused("register with the read token", err, 403, 40301)
	_, err = ro.DeleteSubject(ctx, "s-t.OrderPlaced", sr.SoftDelete)
	refused("delete with the read token", err, 403, 40301)
	res := ro.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone})
	refused("set compatibility with the read token", res[0].Err, 403, 40301)
	if l := logs.String(); strings.Contains(l, write) || strings.Contains(l, read) {
		t.Errorf("the registry logs a token:\n%s", l)
	}
}

// syncBuf is a bytes.Buffer for a logger that other goroutines write to.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
