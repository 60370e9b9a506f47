package runner

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/pkg/ui"
)

// NewCoordinator builds the runtime of topology t's saga coordinator, its
// store (the saga API's Reader for this process) and registers its
// readiness and its troupe_saga_instances gauge on the env. The env's serde
// learns SagaEnded. With o.Advertise, the coordinator's Kafka client id
// advertises its saga API to the other coordinators of its group
// (saga.ClientID); serve that API with MountSaga.
func (e *Env) NewCoordinator(t *topology.Topology, o StepOptions) (*step.Runtime, *saga.Store, error) {
	if err := saga.Register(e.Serde); err != nil {
		return nil, nil, err
	}
	c := saga.NewCoordinator(t, e.Serde, e.Metrics)
	cfg := e.stepConfig(o)
	if o.Advertise != "" {
		cfg.Kafka.ClientID = saga.ClientID(o.Advertise)
	}
	rt, err := step.NewRuntime(c.Step(), cfg)
	if err != nil {
		return nil, nil, err
	}
	e.Server.AddReadiness("coordinator "+t.Saga, rt.Ready)
	store := saga.NewStore(rt, t)
	if err := e.Metrics.Register(store.Collector()); err != nil {
		return nil, nil, fmt.Errorf("register saga metrics: %w", err)
	}
	return rt, store, nil
}

// MountSaga serves the saga API and the UI of the coordinator read by
// store on the env's server, merged with the other coordinators of its
// group (saga.Cluster): any of them answers for every partition, whichever
// holds it, or says which peer it cannot reach and what to do;
// /api/deadletters (MountDeadLetters), the outstanding dead letters of
// every step and of the coordinator itself, and their replay and discard;
// and GET /api/records (MountRecords), one record decoded. self is
// this process's advertised API (NewCoordinator's StepOptions.Advertise).
// The API requires tokens (api.Server.RequireToken), and the write token
// goes to the peers. Call close when done.
func (e *Env) MountSaga(ctx context.Context, t *topology.Topology, store *saga.Store, self string, tokens auth.Tokens) (close func(), err error) {
	admin, err := kafka.NewClient(ctx, e.Kafka)
	if err != nil {
		return nil, err
	}
	e.Server.RequireToken(tokens)
	cluster := saga.NewCluster(store, self, t.CoordinatorGroup(), kadm.NewClient(admin))
	cluster.SendToken(tokens.Write)
	saga.Mount(e.Server, cluster, cluster)
	ui.Mount(e.Server, t)
	MountDeadLetters(e.Server, e.Kafka, t, e.Log)
	MountRecords(e.Server, e.Kafka, t, e.Serde)
	return admin.Close, nil
}

// runCoordinator is `run --coordinator`: the coordinator, and the saga API
// on --http, merged with its peers' (saga.Cluster).
func runCoordinator(ctx context.Context, app App, g *Globals, o RunOptions, t *topology.Topology) error {
	gu, err := GuaranteeOf(t, o.Guarantee)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	dir := o.StateDir
	if dir == "" {
		dir = filepath.Join(".troupe", "state", t.App+"."+saga.StepName(t))
	}
	tokens, err := g.Tokens(o.Auth)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ln, err := api.Listen(o.HTTP, "--http")
	if err != nil {
		return err
	}
	if err := g.Guard(ln, tokens, o.Auth, "the saga API", "--http"); err != nil {
		ln.Close()
		return err
	}
	self := o.Advertise
	if self == "" {
		self = advertised(ln.Addr())
	}
	log := g.Log.With().Str("app", t.App).Str("saga", t.Saga).Logger()
	kcfg := g.KafkaConfig()
	// Peers find this process's API in the group's description.
	kcfg.ClientID = saga.ClientID(self)
	env, err := NewEnv(app, kcfg, g.Registry, app.Version, log, g.RegistryOpts()...)
	if err != nil {
		ln.Close()
		return err
	}
	defer env.Close()
	env.StepLog = g.Log.With().Str("saga", t.Saga).Logger()
	if err := checkTypes(t, env.Serde); err != nil {
		ln.Close()
		return err
	}
	rt, store, err := env.NewCoordinator(t, StepOptions{StateDir: dir, Guarantee: gu, Advertise: self})
	if err != nil {
		ln.Close()
		return err
	}
	closeAPI, err := env.MountSaga(ctx, t, store, self, tokens)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeAPI()
	log.Info().Str("http", "http://"+ln.Addr().String()).Str("advertise", self).Str("state_dir", dir).
		Stringer("guarantee", gu).Strs("brokers", env.Kafka.Brokers).Msg("starting saga coordinator")
	return serve(ctx, ln, env, env.AfterRegistry(rt.Run))
}

// advertised is the base URL of a listener for peers: its address, with
// the host name in place of an unspecified IP.
func advertised(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
