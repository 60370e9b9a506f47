package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/sr"
	"golang.org/x/sync/errgroup"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/metrics"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/suggest"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/pkg/tracing"
)

// App is a program's steps: what Main and `troupe run` run.
type App struct {
	// Name is the binary's name, for --help.
	Name string
	// Version is printed by the version command; default "dev".
	Version string
	// Types registers the app's event types (Go type + Avro schema) with
	// the serde.
	Types func(*avro.Serde) error
	// Steps returns the app's step definitions by step name, for a
	// topology. Every step of the topology needs one.
	Steps func(*topology.Topology) map[string]step.Definition
}

// Env is what every component of one troupe process shares: the Kafka
// connection, the serde, the metrics registry and the HTTP server.
type Env struct {
	Kafka   kafka.Config
	Serde   *avro.Serde
	Metrics *prometheus.Registry
	Server  *api.Server
	Log     zerolog.Logger
	// StepLog is the logger the env's step runtimes get. They add app and
	// step themselves, so it must not have them (a field twice is a JSON
	// object with a duplicate key). NewEnv sets it to its logger.
	StepLog zerolog.Logger
	// Registry is the Serde's registry client.
	Registry *avro.RegistryClient
	// Tracing traces every step and coordinator of the env when the
	// OTEL_* environment asks for it (package tracing); nil: off.
	Tracing *tracing.Provider
}

// NewEnv builds an Env: a registry client for registryURL (with regOpts:
// Globals.RegistryOpts), a serde with auto-registration on and the app's
// types, a metrics registry and an HTTP server.
func NewEnv(app App, kcfg kafka.Config, registryURL, version string, log zerolog.Logger, regOpts ...sr.ClientOpt) (*Env, error) {
	rc, err := avro.NewRegistryClient(registryURL, regOpts...)
	if err != nil {
		return nil, err
	}
	serde := avro.NewSerde(rc, avro.AutoRegister(true))
	if app.Types != nil {
		if err := app.Types(serde); err != nil {
			return nil, fmt.Errorf("register event types: %w", err)
		}
	}
	reg := metrics.NewRegistry(version)
	tp, err := tracing.FromEnv(context.Background(), tracing.Options{Registerer: reg, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if tp != nil {
		log.Info().Str("endpoint", tracing.Endpoint(nil)).Msg("tracing on: spans go to the OTLP collector")
	}
	return &Env{Kafka: kcfg, Serde: serde, Metrics: reg, Server: api.New(reg, log), Log: log, StepLog: log, Registry: rc, Tracing: tp}, nil
}

// Close exports the spans still queued (5 s at most) and stops tracing.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Tracing.Shutdown(ctx); err != nil {
		e.Log.Warn().Err(err).Msg("spans still queued at exit were dropped")
	}
}

// StepOptions say how to run one step.
type StepOptions struct {
	// StateDir is the step's own state directory.
	StateDir  string
	Guarantee step.Guarantee
	// Concurrency and HandlerTimeout override the topology's and the
	// runtime's defaults when not zero (--concurrency, --handler-timeout).
	Concurrency    int
	HandlerTimeout time.Duration
	// Advertise is, for a coordinator, the base URL of this process's saga
	// API, which its Kafka client id advertises to the other coordinators
	// of its group (saga.ClientID); empty: none.
	Advertise string
}

// NewStep builds the runtime of step name of topology t and registers its
// readiness on the env's server. The runtime keeps the saga's rules for the
// step (saga.ForStep): SagaEnded, the compensation barrier.
func (e *Env) NewStep(t *topology.Topology, def step.Definition, name string, o StepOptions) (*step.Runtime, error) {
	cfg := e.stepConfig(o)
	cfg.Saga, cfg.Retry = saga.ForStep(t, name), RetryOf(t, name)
	if s, ok := t.Step(name); ok && cfg.Concurrency == 0 {
		cfg.Concurrency = s.Concurrency
	}
	rt, err := step.NewRuntime(def, cfg)
	if err != nil {
		return nil, err
	}
	e.Server.AddReadiness("step "+name, rt.Ready)
	return rt, nil
}

// stepConfig is the runtime config every step and coordinator of the env
// shares.
func (e *Env) stepConfig(o StepOptions) step.Config {
	return step.Config{
		Kafka:          e.Kafka,
		Codec:          e.Serde,
		StateDir:       o.StateDir,
		Guarantee:      o.Guarantee,
		Concurrency:    o.Concurrency,
		HandlerTimeout: o.HandlerTimeout,
		Registerer:     e.Metrics,
		Logger:         e.StepLog,
		Tracing:        e.Tracing.TracerProvider(),
	}
}

// RetryOf is the retry policy of step name of topology t (the step's retry:
// block, or the topology's) for the step runtime.
func RetryOf(t *topology.Topology, name string) step.RetryPolicy {
	r := t.RetryFor(name)
	jitter := r.Jitter
	if jitter == 0 {
		jitter = -1 // none, as the file says; 0 is the runtime's default
	}
	return step.RetryPolicy{Attempts: r.Attempts, InitialBackoff: r.InitialBackoff, MaxBackoff: r.MaxBackoff, Jitter: jitter}
}

// GuaranteeOf maps a topology's guarantee, overridden by flag when flag is
// not empty, to the step runtime's.
func GuaranteeOf(t *topology.Topology, flag string) (step.Guarantee, error) {
	g := string(t.Guarantee)
	if flag != "" {
		g = flag
	}
	return step.ParseGuarantee(g)
}

// RunOptions are the flags of `run`.
type RunOptions struct {
	Topology    string
	Step        string
	Coordinator string
	StateDir    string
	Guarantee   string
	HTTP        string
	// Concurrency and HandlerTimeout: see StepOptions.
	Concurrency    int
	HandlerTimeout time.Duration
	// Advertise is the base URL peers reach this process's API at (the
	// coordinator's); default http://<--http>, with the host name for an
	// unspecified address.
	Advertise string
	// Auth: the coordinator's saga API's read token and --insecure.
	Auth ServeAuth
}

// ErrUsage marks errors in the flags or input of Run: exit code 2.
var ErrUsage = errors.New("usage")

func usage(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}

// Run runs one step of app (or, with o.Coordinator, the saga's coordinator)
// until ctx is done, serving /metrics, /healthz and /readyz on o.HTTP.
func Run(ctx context.Context, app App, g *Globals, o RunOptions) error {
	t, err := topology.Load(o.Topology)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	switch {
	case o.Step == "" && o.Coordinator == "":
		return usage("pass --step NAME (one of %v) or --coordinator %s", t.StepNames(), t.Saga)
	case o.Step != "" && o.Coordinator != "":
		return usage("pass either --step or --coordinator, not both")
	case o.Coordinator != t.Saga && o.Coordinator != "":
		return usage("unknown saga %q%s: the topology %s has saga %q", o.Coordinator, suggest.DidYouMean(o.Coordinator, []string{t.Saga}), o.Topology, t.Saga)
	case o.Coordinator != "":
		return runCoordinator(ctx, app, g, o, t)
	}
	defs := app.Steps(t)
	def, ok := defs[o.Step]
	if _, inTopo := t.Step(o.Step); !inTopo || !ok {
		return usage("unknown step %q%s: the topology %s has steps %v (the coordinator is --coordinator %s)", o.Step, suggest.DidYouMean(o.Step, t.StepNames()), o.Topology, t.StepNames(), t.Saga)
	}
	g2, err := GuaranteeOf(t, o.Guarantee)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	dir := o.StateDir
	if dir == "" {
		dir = filepath.Join(".troupe", "state", t.App+"."+o.Step)
	}
	log := g.Log.With().Str("app", t.App).Str("step", o.Step).Logger()
	env, err := NewEnv(app, g.KafkaConfig(), g.Registry, app.Version, log, g.RegistryOpts()...)
	if err != nil {
		return err
	}
	env.StepLog = g.Log
	if err := checkTypes(t, env.Serde); err != nil {
		return err
	}
	defer env.Close()
	rt, err := env.NewStep(t, def, o.Step, StepOptions{StateDir: dir, Guarantee: g2, Concurrency: o.Concurrency, HandlerTimeout: o.HandlerTimeout})
	if err != nil {
		return err
	}
	if err := checkStepHandlers(t, o.Step, rt); err != nil {
		return err
	}
	ln, err := api.Listen(o.HTTP, "--http")
	if err != nil {
		return err
	}
	log.Info().Str("http", "http://"+ln.Addr().String()).Str("state_dir", dir).Stringer("guarantee", g2).
		Strs("brokers", env.Kafka.Brokers).Msg("starting step")
	return serve(ctx, ln, env, env.AfterRegistry(rt.Run))
}

// AfterRegistry returns run preceded by a wait (avro.DefaultRegistryWait at
// most, with progress logs) for the schema registry to answer: a step
// started together with its registry (compose, Kubernetes) would otherwise
// spend its retries on its first records and dead-letter them. /healthz is
// served meanwhile, /readyz says the step is starting.
func (e *Env) AfterRegistry(run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := e.Registry.Await(ctx, 0, e.Log); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		return run(ctx)
	}
}

// serve runs the HTTP server and the given loops until ctx is done or one
// of them fails; then it stops the rest.
func serve(ctx context.Context, ln net.Listener, env *Env, loops ...func(context.Context) error) error {
	eg, ctx := errgroup.WithContext(ctx)
	env.Server.Bound(ln.Addr())
	eg.Go(func() error { return api.Serve(ctx, ln, env.Server.Handler()) })
	for _, loop := range loops {
		eg.Go(func() error { return loop(ctx) })
	}
	err := eg.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// defaultHTTP is where a step process serves by default: not 8080, which
// `troupe dev` takes, so both can run on one machine.
const defaultHTTP = "127.0.0.1:8090"
