package kafkaharness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// Environment variables read by Main and StartCluster.
const (
	// EnvBrokers holds the brokers under test, comma separated. Set it to
	// test against a cluster you started; Main sets it otherwise.
	EnvBrokers = "TROUPE_TEST_BROKERS"
	// EnvKafka chooses the backend Main starts: "kafka" (default) or
	// "kfake".
	EnvKafka = "TROUPE_TEST_KAFKA"
)

// Backends that Backend reports.
const (
	BackendKafka    = "kafka"    // Apache Kafka started by this process
	BackendKfake    = "kfake"    // franz-go's in-process fake
	BackendExternal = "external" // TROUPE_TEST_BROKERS given from outside
)

var (
	backend string   // set by Main
	shared  *Cluster // the cluster Main started, if any
)

// Main runs an integration test package against Kafka; call it from
// TestMain. It never returns.
//
// If TROUPE_TEST_BROKERS is set it is used as is. Otherwise Main starts one
// broker, Apache Kafka via [Start] or, with TROUPE_TEST_KAFKA=kfake, kfake
// in process, and exports its address in TROUPE_TEST_BROKERS. If java or
// mvn is missing the package is skipped (exit 0), or fails when CI=true. When
// a test fails Main prints the tail of the broker log. The broker is stopped
// on exit and on SIGINT/SIGTERM.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv(EnvBrokers) != "" {
		backend = BackendExternal
		fmt.Fprintf(os.Stderr, "kafkaharness: using %s=%s\n", EnvBrokers, os.Getenv(EnvBrokers))
		return m.Run()
	}
	fake, err := wantFake()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// A signal during start cancels it; during the tests it stops the
	// broker and exits.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *Cluster, 1) // nil if Start failed
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case sig := <-sigs:
			cancel()
			fmt.Fprintf(os.Stderr, "kafkaharness: %v: stopping the brokers\n", sig)
			if c := <-started; c != nil {
				c.Stop()
			}
			live.stopAll() // clusters of StartCluster too
			os.Exit(130)
		case <-ctx.Done():
		}
	}()

	cl, err := Start(ctx, Options{Fake: fake, Logger: os.Stderr})
	started <- cl
	if err != nil {
		cancel()
		<-watcherDone
		return startFailed(err)
	}
	defer func() {
		cancel()
		<-watcherDone
		cl.Stop()
	}()
	shared = cl
	if fake {
		backend = BackendKfake
		fmt.Fprint(os.Stderr, kfakeBanner)
	} else {
		backend = BackendKafka
	}
	os.Setenv(EnvBrokers, strings.Join(cl.Addrs(), ","))

	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "\nkafkaharness: tests failed; broker log tail:\n%s\n", cl.LogTail(60))
	}
	return code
}

const kfakeBanner = `
################################################################
#  TROUPE_TEST_KAFKA=kfake: these tests run against franz-go's  #
#  in-process kfake, NOT the real Apache Kafka broker.          #
################################################################
`

func wantFake() (bool, error) {
	switch v := os.Getenv(EnvKafka); v {
	case "", BackendKafka:
		return false, nil
	case BackendKfake:
		return true, nil
	default:
		return false, fmt.Errorf("kafkaharness: %s=%q, want %q or %q", EnvKafka, v, BackendKafka, BackendKfake)
	}
}

func inCI() bool { return os.Getenv("CI") == "true" || os.Getenv("CI") == "1" }

// startFailed reports a failed start and returns the exit code: 0 (skip)
// when a tool is missing outside CI, 1 otherwise.
func startFailed(err error) int {
	if errors.Is(err, ErrToolMissing) {
		if inCI() {
			fmt.Fprintf(os.Stderr, "%v\nCI=true, so this is a failure: the integration tests need the real broker.\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "%v\nSKIP: integration tests not run (or set %s=kfake to run them against kfake)\n", err, EnvKafka)
		fmt.Println("SKIP")
		return 0
	}
	fmt.Fprintf(os.Stderr, "kafkaharness: cannot start the test broker: %v\n", err)
	return 1
}

// Brokers returns the brokers under test from TROUPE_TEST_BROKERS, which
// Main sets. It is nil outside a package whose TestMain calls Main and
// without the variable set.
func Brokers() []string {
	v := os.Getenv(EnvBrokers)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// Backend reports what Main runs the tests against: BackendKafka,
// BackendKfake or BackendExternal ("" before Main).
func Backend() string { return backend }

// Shared returns the cluster Main started, or nil when TROUPE_TEST_BROKERS
// came from outside. Tests must not stop its nodes: other tests share it.
func Shared() *Cluster { return shared }

// StartCluster starts a cluster of its own for test t (a fault test that
// kills brokers, say) and stops it when t ends, printing the broker log tail
// if t failed. Under TROUPE_TEST_KAFKA=kfake it is a kfake cluster with as
// many brokers. If java or mvn is missing, t is skipped, or fails when
// CI=true.
func StartCluster(t testing.TB, brokers int) *Cluster {
	t.Helper()
	return StartClusterWith(t, Options{Brokers: brokers})
}

// StartClusterWith is StartCluster with opts (Logger defaults to t's
// output). A secured cluster (opts.Listener) needs the real broker: under
// TROUPE_TEST_KAFKA=kfake, t is skipped.
func StartClusterWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	fake, err := wantFake()
	if err != nil {
		t.Fatal(err)
	}
	if fake && secured(opts.Listener) {
		t.Skipf("%s=kfake: the harness secures only the real broker (Listener %s)", EnvKafka, opts.Listener)
	}
	opts.Fake = fake
	if opts.Logger == nil {
		opts.Logger = t.Output()
	}
	c, err := Start(t.Context(), opts)
	if err != nil {
		if errors.Is(err, ErrToolMissing) && !inCI() {
			t.Skipf("%v (set %s=kfake to run against kfake)", err, EnvKafka)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log tail:\n%s", c.LogTail(60))
		}
		c.Stop()
	})
	return c
}
