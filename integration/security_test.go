package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
)

// The example saga over a secured Apache Kafka, one broker per listener
// kind: SASL_SSL with SCRAM-SHA-512 (the user created when the storage was
// formatted) and mTLS (a CA, the broker's and the clients' certificates
// made at test time). Every troupe process connects with TROUPE_TLS_* and
// TROUPE_SASL_* only; orders of each outcome end as the rules say. A wrong
// password, a client certificate of another CA and a broker certificate
// the client does not trust each stop `troupe run` within seconds, with an
// error naming the flag to fix. The password, and the client key, are in
// no process's output.
func TestSagaOverSecuredKafka(t *testing.T) {
	for _, listener := range []string{kafkaharness.ListenerSASLSSL, kafkaharness.ListenerMTLS} {
		t.Run(listener, func(t *testing.T) { testSecuredSaga(t, listener) })
	}
}

// refused is a `troupe run` that must fail: its environment, and what
// its error must say.
type refused struct {
	name string
	env  []string
	want []string
}

func testSecuredSaga(t *testing.T, listener string) {
	const user = "troupe"
	var b [12]byte
	_, _ = rand.Read(b[:])
	pass := "pw-" + hex.EncodeToString(b[:])
	start := time.Now()
	c := kafkaharness.StartClusterWith(t, kafkaharness.Options{Listener: listener, SCRAMUsers: map[string]string{user: pass}})
	t.Logf("%s: broker up in %s", listener, time.Since(start).Round(10*time.Millisecond))
	ca := c.CA().CertFile

	var secrets []string // what no output may show
	var cfg kafka.Config
	var env []string
	var bad []refused
	switch listener {
	case kafkaharness.ListenerSASLSSL:
		secrets = []string{pass}
		cfg = kafka.Config{TLSCAFile: ca, SASLMechanism: kafka.SASLScramSHA512, SASLUser: user, SASLPassword: pass}
		env = []string{"TROUPE_TLS_CA=" + ca, "TROUPE_SASL_MECHANISM=SCRAM-SHA-512", "TROUPE_SASL_USER=" + user, "TROUPE_SASL_PASSWORD=" + pass}
		bad = []refused{
			{"wrong-password", slices.Concat(env[:3], []string{"TROUPE_SASL_PASSWORD=" + pass[:len(pass)-1] + "x"}), []string{"SASL_AUTHENTICATION_FAILED", "--sasl-password", "TROUPE_SASL_PASSWORD"}},
			{"untrusted-broker", slices.Concat([]string{"TROUPE_TLS=true"}, env[1:]), []string{"--tls-ca", "TROUPE_TLS_CA"}},
		}
	case kafkaharness.ListenerMTLS:
		cert, key, err := c.CA().Issue("troupe-client")
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		// The key's body, without the PEM armour every key shares.
		secrets = []string{strings.Split(string(keyPEM), "\n")[1]}
		other, err := kafkaharness.NewCA(t.TempDir(), "not-the-brokers")
		if err != nil {
			t.Fatal(err)
		}
		otherCert, otherKey, err := other.Issue("stranger")
		if err != nil {
			t.Fatal(err)
		}
		cfg = kafka.Config{TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key}
		env = []string{"TROUPE_TLS_CA=" + ca, "TROUPE_TLS_CERT=" + cert, "TROUPE_TLS_KEY=" + key}
		bad = []refused{
			{"untrusted-client", []string{"TROUPE_TLS_CA=" + ca, "TROUPE_TLS_CERT=" + otherCert, "TROUPE_TLS_KEY=" + otherKey}, []string{"refused the client certificate", "--tls-cert", "--tls-key"}},
			{"no-client-cert", slices.Clone(env[:1]), []string{"--tls-cert", "--tls-key"}},
			{"untrusted-broker", slices.Concat([]string{"TROUPE_TLS=true"}, env[1:]), []string{"--tls-ca", "TROUPE_TLS_CA"}},
		}
	}
	cfg.Brokers = c.Addrs()
	opts, err := cfg.Opts()
	if err != nil {
		t.Fatal(err)
	}

	// Two partitions a topic, not the file's 8: fewer to create and assign.
	begin := time.Now()
	e := newSagaEnvWith(t, &sagaEnv{brokers: c.Addrs(), env: env, opts: opts}, "", "partitions: 8", "partitions: 2")
	t.Logf("%s: registry up, topics applied in %s", listener, time.Since(begin).Round(10*time.Millisecond))
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	coord := e.startStep("coordinator", "1")
	want := map[string]orders.Outcome{}
	outcomes := []orders.Outcome{orders.OutcomeCompleted, orders.OutcomeDeclined, orders.OutcomeOutOfStock, orders.OutcomeShipFailed}
	for i, id := range orderIDs("sec", len(outcomes)) {
		want[id] = outcomes[i]
	}
	ctx := context.Background()
	e.ready(e.procs...)
	t.Logf("%s: steps and coordinator ready %s after the broker", listener, time.Since(begin).Round(10*time.Millisecond))
	e.placeOrders(ctx, want)
	got := e.waitEnded(coord.http, want, 60*time.Second)
	chains := e.chains(ctx, 30*time.Second, func(c map[string][]string) bool {
		for id, o := range want {
			// Topics are fetched independently: wait for each command and
			// its ack.
			if count(c[id], "RefundPayment")+count(c[id], "ReleaseInventory") < len(wantOf[o].commands) ||
				count(c[id], "PaymentRefunded")+count(c[id], "InventoryReleased") < len(wantOf[o].commands) {
				return false
			}
		}
		return true
	})
	checkEnds(t, want, got, chains)
	t.Logf("%s: %d sagas ended as predicted %s after the broker", listener, len(want), time.Since(begin).Round(10*time.Millisecond))

	// Refused connections: each `troupe run` exits non-zero within a bound,
	// naming the flag. They run at once; each is timed from its own start.
	procs := make([]*troupeProc, len(bad))
	starts := make([]time.Time, len(bad))
	for i, r := range bad {
		starts[i] = time.Now()
		procs[i] = startTroupeEnv(t, r.name, slices.Concat(r.env, []string{"TROUPE_LOG_LEVEL=debug"}),
			"run", "--topology", e.file, "--registry", e.registry, "--brokers", e.brokerList(), "--step", "payment",
			"--http", freeAddr(t), "--state-dir", t.TempDir())
	}
	const bound = 20 * time.Second
	for i, r := range bad {
		p := procs[i]
		select {
		case <-p.done:
		case <-time.After(time.Until(starts[i].Add(bound))):
			t.Fatalf("%s: troupe run still running after %s\n%s", r.name, bound, tail(p.log.String(), 20))
		}
		took := time.Since(starts[i])
		out := p.log.String()
		if p.err == nil {
			t.Errorf("%s: troupe run exited 0, want an error\n%s", r.name, tail(out, 20))
		}
		for _, w := range r.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: the output does not say %q:\n%s", r.name, w, tail(out, 20))
			}
		}
		t.Logf("%s: exited in %s (%v): %s", r.name, took.Round(10*time.Millisecond), p.err, tail(out, 1))
	}

	// The secrets are in no output: not the saga's processes', not the
	// refused ones', not topics apply's, not --help's.
	help, err := runTroupeEnv(t, ctx, env, "run", "--help")
	if err != nil {
		t.Fatalf("troupe run --help: %v\n%s", err, help)
	}
	apply, err := runTroupeEnv(t, ctx, slices.Concat(env, []string{"TROUPE_LOG_LEVEL=debug"}), "topics", "apply", "--topology", e.file, "--brokers", e.brokerList())
	if err != nil {
		t.Fatalf("troupe topics apply: %v\n%s", err, apply)
	}
	outputs := map[string]string{"troupe run --help": help, "troupe topics apply": apply, "registry": e.regProc.log.String()}
	for _, p := range slices.Concat(e.procs, procs) {
		outputs[p.name] = p.log.String()
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("the output of %s shows a secret", name)
			}
		}
	}
}
