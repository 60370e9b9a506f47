package kafkaharness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestServerProperties(t *testing.T) {
	ports := []nodePorts{{broker: 9001, controller: 9101}, {broker: 9002, controller: 9102}, {broker: 9003, controller: 9103}}
	for _, tc := range []struct {
		name  string
		ports []nodePorts
		id    int
		extra map[string]string
		want  []string
	}{
		{
			name:  "single node",
			ports: ports[:1],
			id:    1,
			want: []string{
				"process.roles=broker,controller\n",
				"controller.quorum.voters=1@127.0.0.1:9101\n",
				"listeners=PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101\n",
				"advertised.listeners=PLAINTEXT://127.0.0.1:9001\n",
				"default.replication.factor=1\n",
				"min.insync.replicas=1\n",
				"transaction.state.log.min.isr=1\n",
				"log.dirs=/data\n",
			},
		},
		{
			name:  "node 2 of 3",
			ports: ports,
			id:    2,
			want: []string{
				"node.id=2\n",
				"controller.quorum.voters=1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103\n",
				"listeners=PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102\n",
				"default.replication.factor=3\n",
				"min.insync.replicas=2\n",
				"offsets.topic.replication.factor=3\n",
				"transaction.state.log.min.isr=2\n",
			},
		},
		{
			name:  "overrides",
			ports: ports[:1],
			id:    1,
			extra: map[string]string{"num.partitions": "4", "zz.extra": "x"},
			want:  []string{"num.partitions=4\n", "zz.extra=x\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := serverProperties(tc.id, tc.ports, listenerProperties(ListenerPlaintext, tc.ports[tc.id-1], "", ""), "/data", tc.extra)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			if strings.Count(got, "\nnum.partitions=") != 1 {
				t.Errorf("num.partitions set %d times", strings.Count(got, "\nnum.partitions="))
			}
		})
	}
}

func TestNewClusterID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 22 || id[0] == '-' || seen[id] {
			t.Fatalf("bad or repeated cluster id %q", id)
		}
		seen[id] = true
		if b, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(b) != 16 {
			t.Fatalf("cluster id %q does not decode to 16 bytes: %v", id, err)
		}
	}
}

func TestCacheDir(t *testing.T) {
	t.Setenv("TROUPE_KAFKA_CACHE", "/a")
	t.Setenv("XDG_CACHE_HOME", "/b")
	if got := CacheDir(); got != "/a" {
		t.Errorf("with TROUPE_KAFKA_CACHE: %q", got)
	}
	t.Setenv("TROUPE_KAFKA_CACHE", "")
	if got := CacheDir(); got != "/b/troupe" {
		t.Errorf("with XDG_CACHE_HOME: %q", got)
	}
}

func TestKafkaVersion(t *testing.T) {
	v, err := KafkaVersion()
	if err != nil || !strings.HasPrefix(v, "4.") {
		t.Fatalf("KafkaVersion() = %q, %v; want 4.x from pom.xml", v, err)
	}
}

func TestReadTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readTail(p, 3)
	if err != nil || got != "line 97\nline 98\nline 99" {
		t.Fatalf("readTail = %q, %v", got, err)
	}
}

// roundTrip produces n records to a new topic of cl's cluster and reads them
// back with a fresh consumer.
func roundTrip(t *testing.T, ctx context.Context, addrs []string, topic string, n int) {
	t.Helper()
	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range n {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
			t.Fatalf("produce %d to %s: %v", i, topic, err)
		}
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for got := 0; got < n; {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d from %s: %v", got, n, topic, ctx.Err())
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
		for _, r := range fs.Records() {
			if want := fmt.Sprint(got); string(r.Value) != want {
				t.Fatalf("record %d of %s is %q", got, topic, r.Value)
			}
			got++
		}
	}
}

func TestFakeCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Fake: true, Brokers: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if !c.Fake() || len(c.Addrs()) != 3 || c.LogTail(5) == "" {
		t.Fatalf("fake cluster: Fake %v, Addrs %v", c.Fake(), c.Addrs())
	}
	roundTrip(t, ctx, c.Addrs(), "before", 10)
	if err := c.KillBroker(1); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ctx, c.Addrs(), "after-kill", 10)
	if err := c.StartBroker(ctx, 1); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ctx, c.Addrs(), "after-restart", 10)
	if err := c.KillBroker(7); err == nil {
		t.Error("KillBroker(7) of 3 succeeded")
	}
	c.Stop()
	c.Stop() // idempotent
}

// TestRealRestart starts one real broker, stops it cleanly, starts it again
// and finds its data.
func TestRealRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Apache Kafka; run without -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Logger: t.Output()})
	if errors.Is(err, ErrToolMissing) && !inCI() {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	roundTrip(t, ctx, c.Addrs(), "before", 5)
	if err := c.StopBroker(0); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := c.StartBroker(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %s", time.Since(begin).Round(10*time.Millisecond))
	roundTrip(t, ctx, c.Addrs(), "after", 5)

	// The records from before the restart are still there.
	cons, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.ConsumeTopics("before"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	if n := len(cons.PollFetches(ctx).Records()); n == 0 {
		t.Fatalf("no records of topic before after restart\n%s", c.LogTail(30))
	}
	if !strings.Contains(c.LogTail(2000), "Kafka Server started") {
		t.Errorf("log tail lacks the start line:\n%s", c.LogTail(20))
	}
}

func TestListenerProperties(t *testing.T) {
	me := nodePorts{broker: 9001, controller: 9101, internal: 9201}
	get := func(kv [][2]string) map[string]string {
		m := map[string]string{}
		for _, p := range kv {
			m[p[0]] = p[1]
		}
		return m
	}
	sasl := get(listenerProperties(ListenerSASLSSL, me, "/ks.pem", "/ca.pem"))
	mtls := get(listenerProperties(ListenerMTLS, me, "/ks.pem", "/ca.pem"))
	for _, m := range []map[string]string{sasl, mtls} {
		if m["advertised.listeners"] != "CLIENT://127.0.0.1:9001,INTERNAL://127.0.0.1:9201" || m["inter.broker.listener.name"] != "INTERNAL" ||
			m["listener.name.client.ssl.keystore.type"] != "PEM" || m["listener.name.client.ssl.keystore.location"] != "/ks.pem" {
			t.Errorf("secured listener properties: %v", m)
		}
	}
	if sasl["listener.security.protocol.map"] != "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:SASL_SSL" ||
		sasl["listener.name.client.sasl.enabled.mechanisms"] != "SCRAM-SHA-512" || sasl["listener.name.client.ssl.client.auth"] != "" {
		t.Errorf("SASL_SSL: %v", sasl)
	}
	if mtls["listener.security.protocol.map"] != "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:SSL" ||
		mtls["listener.name.client.ssl.client.auth"] != "required" || mtls["listener.name.client.ssl.truststore.location"] != "/ca.pem" {
		t.Errorf("MTLS: %v", mtls)
	}
	for _, tc := range []struct {
		opts Options
		want string // in the error; "" valid
	}{
		{Options{}, ""},
		{Options{Listener: ListenerSASLSSL, SCRAMUsers: map[string]string{"ops": "pw-1"}}, ""},
		{Options{Listener: ListenerMTLS}, ""},
		{Options{Listener: "SSL"}, `Listener is "SSL"`},
		{Options{Listener: ListenerSASLSSL}, "needs at least one of SCRAMUsers"},
		{Options{Listener: ListenerSASLSSL, SCRAMUsers: map[string]string{"ops": "a,b]"}}, "characters"},
		{Options{Listener: ListenerMTLS, Fake: true}, "needs the real broker"},
	} {
		err := checkSecurity(tc.opts)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkSecurity(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// A certificate the CA issues verifies against the CA file for its hosts,
// as a server and as a client, and not against another CA.
func TestCAIssue(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA(filepath.Join(dir, "other"), "other")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Issue("broker", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := func(c *CA) *x509.CertPool {
		p := x509.NewCertPool()
		b, err := os.ReadFile(c.CertFile)
		if err != nil || !p.AppendCertsFromPEM(b) {
			t.Fatalf("CA file %s: %v", c.CertFile, err)
		}
		return p
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca), DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("as a client certificate: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(other)}); err == nil {
		t.Error("verifies against another CA")
	}
	if st, err := os.Stat(keyFile); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
}
