// Command countstep is a counting step for the integration tests: it counts
// the Ticks of each instance and answers each with a Counted (at once, or
// through a durable timer), so that a test can check exactly-once outputs
// and exact state across kills, restarts and rebalances. It serves its
// metrics on --http. --fail-keys makes its handler fail for some instances
// (a "bug" that a restart without the flag "fixes"), and --flaky-keys fail
// the first two runs of each of their Ticks (a dependency that recovers),
// for the recovery tests; --retry-* set its retry policy. For the
// benchmark, --handler-delay makes each call wait as a call to a service
// would, --cpuprofile writes a CPU profile of the run, and the metrics
// listener also serves /debug/pprof/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/troupehq/troupe/integration/cmd/countstep/events"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/step"
)

// Count is the state of one instance.
type Count struct {
	N int64 `json:"n"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "countstep:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		brokers   = flag.String("brokers", "127.0.0.1:9092", "seed brokers")
		app       = flag.String("app", "it", "app name")
		input     = flag.String("input", "ticks", "input topic")
		output    = flag.String("output", "counted", "output topic")
		dir       = flag.String("state-dir", "", "state dir")
		guarantee = flag.String("guarantee", "exactly_once", "exactly_once or at_least_once")
		protocol  = flag.String("group-protocol", "", "consumer, classic, or empty for auto")
		session   = flag.Duration("session-timeout", 0, "classic group session timeout")
		interval  = flag.Duration("commit-interval", 100*time.Millisecond, "commit interval")
		httpAddr  = flag.String("http", "127.0.0.1:0", "metrics address")
		logLevel  = flag.String("log-level", "info", "log level")
		failKeys  = flag.String("fail-keys", "", "comma-separated instances whose Ticks the handler always fails")
		flakyKeys = flag.String("flaky-keys", "", "comma-separated instances whose Ticks the handler fails twice, then handles")
		attempts  = flag.Int("retry-attempts", 0, "handler runs per record before the dead letter (0: the default)")
		backoff   = flag.Duration("retry-backoff", 0, "initial retry backoff (0: the default)")
		maxBack   = flag.Duration("retry-max-backoff", 0, "max retry backoff (0: the default)")
		delay     = flag.Duration("handler-delay", 0, "time each handler call waits (on its context), as a call to a service would")
		conc      = flag.Int("concurrency", 0, "handler calls of different instances at once (0: the default)")
		hTimeout  = flag.Duration("handler-timeout", 0, "bound of one handler call (0: the default)")
		cpuProf   = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for the benchmark)")
	)
	flag.Parse()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	log, err := logging.New(os.Stderr, *logLevel, logging.FormatJSON)
	if err != nil {
		return err
	}
	g, err := step.ParseGuarantee(*guarantee)
	if err != nil {
		return err
	}
	serde, err := events.NewSerde()
	if err != nil {
		return err
	}

	failing, flaky := keySet(*failKeys), keySet(*flakyKeys)
	var mu sync.Mutex
	runs := map[int64]int{} // runs of the handler per Tick of a flaky instance

	s := step.New[Count](*app, "count", step.Inputs(*input))
	step.Handle(s, func(c *step.Context[Count], t events.Tick) error {
		if failing[c.Key()] {
			return fmt.Errorf("countstep: instance %s is set to fail (tick %d)", c.Key(), t.Seq)
		}
		if flaky[c.Key()] {
			mu.Lock()
			runs[t.Seq]++
			n := runs[t.Seq]
			mu.Unlock()
			if n <= 2 {
				return fmt.Errorf("countstep: instance %s is flaky (tick %d, run %d)", c.Key(), t.Seq, n)
			}
		}
		if *delay > 0 {
			select {
			case <-time.After(*delay):
			case <-c.Context().Done():
				return c.Context().Err()
			}
		}
		st, _ := c.State()
		st.N++
		c.SetState(st)
		if t.TimerMs > 0 {
			return c.After(time.Duration(t.TimerMs)*time.Millisecond, "reply", *output, events.Counted{Seq: t.Seq, Count: st.N, Timer: true})
		}
		return c.Emit(*output, events.Counted{Seq: t.Seq, Count: st.N})
	})

	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "countstep: metrics on http://%s/metrics\n", ln.Addr())
	mux := http.NewServeMux()
	mux.Handle("/", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// The profiles, for the benchmark (go tool pprof http://ADDR/debug/pprof/heap).
	mux.HandleFunc("/debug/pprof/", httppprof.Index)
	mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = step.Run(ctx, s, step.Config{
		Kafka:          kafka.Config{Brokers: strings.Split(*brokers, ","), ClientID: "countstep", Logger: log},
		Codec:          serde,
		StateDir:       *dir,
		Guarantee:      g,
		CommitInterval: *interval,
		Concurrency:    *conc,
		HandlerTimeout: *hTimeout,
		GroupProtocol:  step.GroupProtocol(*protocol),
		SessionTimeout: *session,
		Retry:          step.RetryPolicy{Attempts: *attempts, InitialBackoff: *backoff, MaxBackoff: *maxBack},
		Registerer:     reg,
		Logger:         log,
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// keySet splits a comma-separated list of instances.
func keySet(list string) map[string]bool {
	set := map[string]bool{}
	for k := range strings.SplitSeq(list, ",") {
		if k != "" {
			set[k] = true
		}
	}
	return set
}
