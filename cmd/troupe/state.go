package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

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
	app, step, stateDir string
}

const stateRebuildLong = `Wipe a step's local state store and restore it from the step's changelog
(<app>.<step>.changelog), partition by partition, with progress.

A step restores its partitions by itself when it starts; rebuild is for a
store it refuses (another step's, or an older format) or one you distrust.
Stop the step first: a store in use is refused.`

func newStateRebuildCmd(g *globals) *cobra.Command {
	var f rebuildFlags
	cmd := &cobra.Command{
		Use:     "rebuild",
		Short:   "Wipe a step's state store and restore it from the changelog",
		Long:    stateRebuildLong,
		Example: `  troupe state rebuild --app orders --step payment --state-dir /var/lib/troupe/payment`,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runStateRebuild(cmd, g, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.app, "app", "", "the app the step belongs to (the topology's app)")
	fl.StringVar(&f.step, "step", "", "the step whose store to rebuild")
	fl.StringVar(&f.stateDir, "state-dir", "", "the step's state directory (its --state-dir)")
	return cmd
}

func runStateRebuild(cmd *cobra.Command, g *globals, f rebuildFlags) error {
	var missing []error
	for flag, v := range map[string]string{"--app": f.app, "--step": f.step, "--state-dir": f.stateDir} {
		if v == "" {
			missing = append(missing, fmt.Errorf("%s is required", flag))
		}
	}
	if err := errors.Join(missing...); err != nil {
		return usagef("%v (see 'troupe state rebuild --help')", err)
	}
	kcfg := g.KafkaConfig()
	if err := kcfg.Validate(); err != nil {
		return asUsage(err)
	}
	log := g.Log.With().Str("app", f.app).Str("step", f.step).Logger()
	start := time.Now()
	results, err := state.Rebuild(cmdContext(cmd), kcfg, f.stateDir, f.app, f.step, log)
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
		f.stateDir, state.ChangelogTopic(f.app, f.step), len(results), records, time.Since(start).Round(time.Millisecond))
	return nil
}
