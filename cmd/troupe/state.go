package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/state"
)

func newStateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Operate a step's local state store",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newStateRebuildCmd(g))
	return cmd
}

type rebuildFlags struct {
	app, step, coordinator, stateDir, topology, dataDir string
	dev                                                 bool
}

const stateRebuildLong = `Wipe a step's local state store and restore it from the step's changelog
(<app>.<step>.changelog), partition by partition, with progress.

A step restores its partitions by itself when it starts; rebuild is for a
store it refuses (another step's, or an older format) or one you distrust.
Stop the step first: a store in use is refused.

The defaults are those of 'troupe run': the app is the topology's
(--topology), the state directory .troupe/state/<app>.<step>. The saga's
coordinator is --step saga.<saga> (or --coordinator SAGA).

On 'troupe dev' the broker stops with dev, so rebuild with --dev instead:
stop dev (Ctrl-C), run 'troupe state rebuild --step NAME --dev', start dev
again. --dev opens the stopped dev's broker data (--data-dir, default
.troupe, as dev's) on a free loopback port for the rebuild, and restores
<data-dir>/state/<app>.<step>; it refuses while dev runs (dev locks its
data dir), and holds that lock meanwhile, so a dev started then refuses.`

func newStateRebuildCmd(g *globals) *cobra.Command {
	var f rebuildFlags
	cmd := &cobra.Command{
		Use:   "rebuild --step NAME",
		Short: "Wipe a step's state store and restore it from the changelog",
		Long:  stateRebuildLong,
		Example: `  troupe state rebuild --step payment                  # a stopped 'troupe run --step payment', defaults
  troupe state rebuild --step payment --state-dir /var/lib/troupe/payment --brokers kafka:9092
  troupe state rebuild --coordinator order-fulfillment
  troupe state rebuild --step payment --dev              # a stopped 'troupe dev'`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error { return runStateRebuild(cmd, g, f) },
	}
	fl := cmd.Flags()
	runner.TopologyFlag(fl, &f.topology, "topology file: the app and its steps")
	fl.StringVar(&f.app, "app", "", "the app the step belongs to (default: the topology's app)")
	fl.StringVar(&f.step, "step", "", "the step whose store to rebuild (this or --coordinator is required); the coordinator is saga.<saga>")
	fl.StringVar(&f.coordinator, "coordinator", "", "rebuild the store of this saga's coordinator (the same as --step saga.SAGA)")
	fl.StringVar(&f.stateDir, "state-dir", "", "the step's state directory, its --state-dir (default: .troupe/state/<app>.<step>, or with --dev <data-dir>/state/<app>.<step>)")
	fl.BoolVar(&f.dev, "dev", false, "rebuild from a stopped 'troupe dev': open its broker's data under --data-dir for the rebuild")
	fl.StringVar(&f.dataDir, "data-dir", ".troupe", "with --dev: the --data-dir of the stopped troupe dev")
	return cmd
}

func runStateRebuild(cmd *cobra.Command, g *globals, f rebuildFlags) error {
	fl := cmd.Flags()
	if fl.Changed("data-dir") && !f.dev {
		return usagef("--data-dir goes with --dev (the stopped troupe dev's data directory)")
	}
	if f.dev && fl.Changed("brokers") {
		return usagef("--dev reads the stopped troupe dev's own broker data; it takes no --brokers")
	}
	step := f.step
	if _, err := os.Stat(f.topology); err == nil || runner.Given(fl, "topology") {
		t, err := loadTopology(f.topology)
		if err != nil {
			return err
		}
		if step, err = resolveStep(t, f.step, f.coordinator, cmd.CommandPath()); err != nil {
			return err
		}
		if f.app == "" {
			f.app = t.App
		}
	} else if f.coordinator != "" {
		return usagef("--coordinator needs the topology (%s is missing): pass --topology, or --app and --step saga.SAGA", f.topology)
	}
	var missing []error
	if step == "" {
		missing = append(missing, errors.New("--step is required"))
	}
	if f.app == "" {
		missing = append(missing, fmt.Errorf("--app is required (no topology at %s to take it from; pass --topology or --app)", f.topology))
	}
	if err := errors.Join(missing...); err != nil {
		return usagef("%v (see 'troupe state rebuild --help')", err)
	}
	if f.stateDir == "" {
		base := ".troupe"
		if f.dev {
			base = f.dataDir
		}
		f.stateDir = filepath.Join(base, "state", f.app+"."+step)
	}
	kcfg := g.KafkaConfig()
	if f.dev {
		stop, addr, err := openStoppedDev(f.dataDir, g)
		if err != nil {
			return err
		}
		defer stop()
		kcfg.Brokers = []string{addr}
	}
	if err := kcfg.Validate(); err != nil {
		return asUsage(err)
	}
	log := g.Log.With().Str("app", f.app).Str("step", step).Logger()
	start := time.Now()
	results, err := state.Rebuild(cmdContext(cmd), kcfg, f.stateDir, f.app, step, log)
	var ie *state.IdentityError
	if errors.As(err, &ie) {
		return asUsage(err)
	}
	if err != nil {
		return err
	}
	var records int64
	for _, r := range results {
		records += r.Records
	}
	fmt.Fprintf(cmd.OutOrStdout(), "rebuilt %s from %s: %d partitions, %d records in %s\n",
		f.stateDir, state.ChangelogTopic(f.app, step), len(results), records, time.Since(start).Round(time.Millisecond))
	return nil
}

// openStoppedDev starts an embedded broker on the data of a stopped troupe
// dev, on a free loopback port, and returns how to stop it and its address.
// It holds dev's lock on dataDir meanwhile: it refuses while dev runs, and
// a dev started meanwhile refuses.
func openStoppedDev(dataDir string, g *globals) (func(), string, error) {
	kdir := filepath.Join(dataDir, "kafka")
	if fi, err := os.Stat(kdir); err != nil || !fi.IsDir() {
		return nil, "", usagef("%s holds no troupe dev broker data (no %s): pass the --data-dir troupe dev ran with", dataDir, kdir)
	}
	unlock, err := runner.LockDataDir(dataDir)
	if errors.Is(err, runner.ErrUsage) {
		return nil, "", usagef("%v, then rebuild", err)
	}
	if err != nil {
		return nil, "", err
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{DataDir: kdir, Logger: g.Log})
	if err != nil {
		unlock()
		return nil, "", err
	}
	return func() { broker.Close(); unlock() }, broker.Addr(), nil
}
