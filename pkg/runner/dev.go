package runner

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/schemas"
	topologies "github.com/troupehq/troupe/topology"
)

// DevOptions are the flags of `troupe dev`.
type DevOptions struct {
	KafkaPort    int
	RegistryPort int
	DataDir      string
	HTTP         string
	DemoRate     float64
	// Topology is a topology file; empty runs the embedded example.
	Topology string
	// SummaryEvery is how often a summary line is printed; default 5 s.
	SummaryEvery time.Duration
	// Out receives the banner and the summary lines.
	Out io.Writer
	// Schemas are registered at start, each event type of the topology
	// under <its topic>-<full name> and SagaEnded under the saga's ended
	// topic; nil means the example's (package schemas).
	Schemas []avro.SchemaFile
	// Auth: the read token and --insecure of the registry and the saga API.
	Auth ServeAuth
}

// Dev runs the whole stack in one process until ctx is done: the embedded
// broker, the built-in registry, the topology's topics and schemas, every
// step, the HTTP server and the demo load. It first checks the topology
// against the app (every event type has a Go type, every step's handlers
// match its on:) and locks o.DataDir (LockFile): a second Dev on the same
// dir is refused before it opens anything.
func Dev(ctx context.Context, app App, g *Globals, o DevOptions) error {
	log := g.Log.With().Str("component", "dev").Logger()
	if o.SummaryEvery <= 0 {
		o.SummaryEvery = 5 * time.Second
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"--kafka-port", o.KafkaPort}, {"--registry-port", o.RegistryPort}} {
		if p.v <= 0 || p.v > 65535 {
			return usage("%s %d is not a port (1-65535)", p.name, p.v)
		}
	}
	var t *topology.Topology
	var err error
	if o.Topology == "" {
		t, err = topology.Parse("topology/orders.yaml (embedded)", topologies.Orders)
	} else {
		t, err = topology.Load(o.Topology)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	defs := app.Steps(t)
	for _, name := range t.StepNames() {
		if defs[name] == nil {
			return usage("the app has no handlers for step %q of %s", name, t.File)
		}
	}
	serde, err := appSerde(app)
	if err != nil {
		return err
	}
	if err := checkTypes(t, serde); err != nil {
		return err
	}
	if o.Schemas == nil {
		if o.Schemas, err = schemas.All(); err != nil {
			return fmt.Errorf("read the example's schemas: %w", err)
		}
	}
	tokens, err := g.Tokens(o.Auth)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	unlock, err := lockDataDir(o.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	// Bind the HTTP ports first: a clash is the most likely start-up error.
	httpLn, err := api.Listen(o.HTTP, "--http")
	if err != nil {
		return err
	}
	defer httpLn.Close()
	if err := g.Guard(httpLn, tokens, o.Auth, "the saga API", "--http"); err != nil {
		return err
	}
	regAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(o.RegistryPort))
	regLn, err := api.Listen(regAddr, "--registry-port")
	if err != nil {
		return err
	}
	defer regLn.Close()

	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Port: o.KafkaPort, DataDir: filepath.Join(o.DataDir, "kafka"), Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		broker.Close()
		log.Info().Msg("embedded Kafka stopped")
	}()
	kcfg := kafka.Config{Brokers: []string{broker.Addr()}, ClientID: "troupe-dev", Logger: g.Log}
	log.Info().Str("brokers", broker.Addr()).Str("data_dir", o.DataDir).Msg("embedded Kafka ready")

	stopRegistry, err := ServeRegistry(ctx, registry.Config{Kafka: kcfg, ReplicationFactor: t.Replication, Auth: tokens}, regLn, g.Log)
	if err != nil || ctx.Err() != nil {
		return err
	}
	defer stopRegistry()
	log.Info().Str("registry", "http://"+regAddr).Msg("schema registry ready")

	if err := ApplyTopics(ctx, kcfg, t); err != nil {
		return err
	}
	var regOpts []sr.ClientOpt
	if tokens.Write != "" {
		regOpts = append(regOpts, sr.BearerToken(tokens.Write))
	}
	n, err := RegisterSchemas(ctx, "http://"+regAddr, t, o.Schemas, regOpts...)
	if err != nil {
		return err
	}
	log.Info().Int("subjects", n).Msg("schemas registered")
	env, err := NewEnv(app, kcfg, "http://"+regAddr, app.Version, g.Log, regOpts...)
	if err != nil {
		return err
	}
	defer env.Close()
	var loops []func(context.Context) error
	for _, name := range t.StepNames() {
		gu, err := GuaranteeOf(t, "")
		if err != nil {
			return err
		}
		rt, err := env.NewStep(t, defs[name], name, StepOptions{
			StateDir:  filepath.Join(o.DataDir, "state", t.App+"."+name),
			Guarantee: gu,
		})
		if err != nil {
			return err
		}
		if err := checkStepHandlers(t, name, rt); err != nil {
			return err
		}
		loops = append(loops, rt.Run)
	}
	gu, err := GuaranteeOf(t, "")
	if err != nil {
		return err
	}
	// A `troupe run --coordinator` beside dev joins dev's group and takes
	// partitions: dev advertises its API to it and merges their answers.
	self := "http://" + loopbackAddr(httpLn.Addr())
	coord, store, err := env.NewCoordinator(t, StepOptions{
		StateDir:  filepath.Join(o.DataDir, "state", t.App+"."+saga.StepName(t)),
		Guarantee: gu,
		Advertise: self,
	})
	if err != nil {
		return err
	}
	closeAPI, err := env.MountSaga(ctx, t, store, self, tokens)
	if err != nil {
		return err
	}
	defer closeAPI()
	loops = append(loops, coord.Run)

	// The demo's orders go out at once, not after franz-go's 10 ms linger:
	// it would add to every saga's latency.
	producer, err := kafka.NewClient(ctx, kcfg, append(env.Tracing.ProducerOpts(), kgo.ProducerLinger(0))...)
	if err != nil {
		return err
	}
	defer producer.Close()
	trigger, _ := t.TopicOf(t.Trigger)
	demo := &orders.Demo{Client: producer, Serde: env.Serde, Rate: o.DemoRate, Topic: trigger}
	obs := NewObserver()
	topics := make([]string, 0, len(t.Topics))
	for _, tp := range t.Topics {
		topics = append(topics, tp.Name)
	}
	loops = append(loops, demo.Run,
		func(ctx context.Context) error { return obs.Run(ctx, kcfg, topics) },
		func(ctx context.Context) error { return summarize(ctx, o, demo, obs, store) },
	)

	tokenFile := g.AuthTokenFile
	if tokenFile != "" {
		tokenFile, _ = filepath.Abs(tokenFile)
	}
	printBanner(o.Out, t, o, bannerAddrs{
		Brokers:   broker.Addr(),
		Registry:  "http://" + regAddr,
		API:       "http://" + loopbackAddr(httpLn.Addr()),
		UI:        httpLn.Addr().String(),
		TokenFile: tokenFile,
	}, os.Getenv)

	err = serve(ctx, httpLn, env, loops...)
	log.Info().Msg("stopped")
	return err
}

// bannerAddrs are where the dev stack listens, as the CLI's global flags
// take them.
type bannerAddrs struct {
	Brokers, Registry, API string
	UI                     string // host:port of the HTTP server as bound
	// TokenFile is the absolute path of --auth-token-file, if dev was given
	// one: the other commands need it too.
	TokenFile string
}

// The CLI's defaults of --brokers, --registry and --api (Globals.AddFlags):
// a dev stack elsewhere needs the banner's export line.
const (
	defaultRegistryURL = "http://127.0.0.1:8081"
	defaultAPIURL      = "http://127.0.0.1:8080"
)

// devExports is the shell line that points the CLI at a dev stack at a
// (and at its token file), or "" when the CLI's defaults and the
// environment (getenv) already do.
func devExports(a bannerAddrs, getenv func(string) string) string {
	var vars []string
	for _, v := range []struct{ env, def, actual string }{
		{"TROUPE_BROKERS", kafka.DefaultBrokers, a.Brokers},
		{"TROUPE_REGISTRY_URL", defaultRegistryURL, a.Registry},
		{"TROUPE_API_URL", defaultAPIURL, a.API},
		{auth.TokenFileEnv, "", a.TokenFile},
	} {
		// What the CLI will use in this shell: the variable, else the default.
		if cur := cmp.Or(getenv(v.env), v.def); cur != v.actual {
			vars = append(vars, v.env+"="+v.actual)
		}
	}
	if len(vars) == 0 {
		return ""
	}
	return "export " + strings.Join(vars, " ")
}

// printBanner prints how to reach the stack, with commands that work as
// printed: when the stack is not where the CLI looks by default, the first
// of them is the export line that points it there.
func printBanner(w io.Writer, t *topology.Topology, o DevOptions, a bannerAddrs, getenv func(string) string) {
	trigger, _ := t.TopicOf(t.Trigger)
	var b strings.Builder
	fmt.Fprintf(&b, `
troupe dev is up: saga %q with steps %s and its coordinator.
  Kafka     %s   (any Kafka client; data in %s)
  registry  %s
  UI        http://%s   (also /api /metrics /healthz /readyz)
  demo      %g orders/s (--demo-rate; 0 = off)
In another terminal:
`, t.Saga, strings.Join(t.StepNames(), ", "), a.Brokers, o.DataDir, a.Registry, a.UI, o.DemoRate)
	if e := devExports(a, getenv); e != "" {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	fmt.Fprintf(&b, `  troupe tail --topic %s --follow
  troupe produce --topic %s --type %s --key my-order --data '{...}'
  troupe saga list --status COMPENSATED; troupe saga get ID
Ctrl-C stops.

`, trigger, trigger, t.Trigger)
	io.WriteString(w, b.String())
}

// loopbackAddr is addr as a client on this machine dials it: an unspecified
// host (0.0.0.0, ::) becomes 127.0.0.1.
func loopbackAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// RegisterSchemas registers the schema of every event type of t under its
// subject <topic>-<full name> (the topic that carries it; SagaEnded: the
// saga's ended topic, and no other) in the registry at url, from files. A
// schema already there is left as it is. It returns how many subjects it
// registered or found, and fails (ErrUsage) when a type has no schema.
// opts go to the registry client (e.g. sr.BearerToken).
func RegisterSchemas(ctx context.Context, url string, t *topology.Topology, files []avro.SchemaFile, opts ...sr.ClientOpt) (int, error) {
	rc, err := avro.NewRegistryClient(url, opts...)
	if err != nil {
		return 0, err
	}
	byName := make(map[string]avro.SchemaFile, len(files))
	for _, f := range files {
		byName[f.FullName] = f
	}
	types := append(t.EventTypes(), topology.EndedType)
	var missing []string
	for _, ev := range types {
		if _, ok := byName[ev]; !ok {
			missing = append(missing, ev)
		}
	}
	if len(missing) > 0 {
		return 0, usage("no schema for %s among the schemas to register (add a .avsc for each)", strings.Join(missing, ", "))
	}
	for _, ev := range types {
		topic, _ := t.SubjectTopic(ev)
		subject := avro.Subject(topic, ev)
		if _, err := rc.Register(ctx, subject, byName[ev].Text); err != nil {
			return 0, fmt.Errorf("register %s under %s: %w (with troupe dev, delete the data dir to start over)", byName[ev].Path, subject, err)
		}
	}
	return len(types), nil
}

// ServeRegistry serves the built-in schema registry on ln until stop is
// called, and returns once it is ready (or ctx is done: then stop is nil
// and so is the error). The registry has a life of its own, beyond ctx:
// it must serve until the steps have stopped, since they may still encode
// while they shut down.
func ServeRegistry(ctx context.Context, cfg registry.Config, ln net.Listener, log zerolog.Logger) (stop func(), err error) {
	reg, err := registry.New(cfg, log)
	if err != nil {
		return nil, err
	}
	regCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- reg.Serve(regCtx, ln) }()
	stop = func() { cancel(); <-done }
	select {
	case <-reg.Ready():
		return stop, nil
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("schema registry: %w", err)
	case <-ctx.Done():
		stop()
		return nil, nil
	}
}

// ApplyTopics creates every topic the topology needs that is missing, and
// fails if one that exists differs (the plan of `troupe topics plan`).
func ApplyTopics(ctx context.Context, cfg kafka.Config, t *topology.Topology) error {
	cl, err := kafka.NewClient(ctx, cfg)
	if err != nil {
		return err
	}
	defer cl.Close()
	plan, err := topology.MakePlan(ctx, cl, t.TopicSpecs())
	if err != nil {
		return err
	}
	if err := plan.Err(); err != nil {
		return fmt.Errorf("the cluster's topics do not match %s (with troupe dev, delete the data dir to start over): %w", t.File, err)
	}
	_, err = plan.Apply(ctx, cl)
	return err
}

// summarize prints one line every o.SummaryEvery: orders placed, events per
// second, and the sagas by status so far.
func summarize(ctx context.Context, o DevOptions, demo *orders.Demo, obs *Observer, sagas *saga.Store) error {
	tick := time.NewTicker(o.SummaryEvery)
	defer tick.Stop()
	var lastTotal int64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			c := obs.Counts()
			var total int64
			for _, v := range c {
				total += v
			}
			rate := float64(total-lastTotal) / now.Sub(last).Seconds()
			lastTotal, last = total, now
			st, err := sagas.Stats(ctx)
			if err != nil {
				continue // stopping
			}
			var by []string
			for _, s := range []saga.Status{saga.Running, saga.Compensating, saga.Completed, saga.Compensated, saga.Failed} {
				if n := st.ByStatus[s]; n > 0 || s != saga.Compensating {
					by = append(by, fmt.Sprintf("%s %d", strings.ToLower(string(s)), n))
				}
			}
			fmt.Fprintf(o.Out, "%s  orders placed %d · events %.0f/s · sagas: %s\n",
				now.Format("15:04:05"), demo.Placed.Load(), rate, strings.Join(by, " · "))
		}
	}
}
