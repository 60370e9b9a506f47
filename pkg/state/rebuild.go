package state

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/kafka"
)

// ChangelogTopic is the changelog of step of app: <app>.<step>.changelog.
func ChangelogTopic(app, step string) string { return app + "." + step + ".changelog" }

// Rebuild wipes the store in dir and restores every partition of the step's
// changelog into it, one after another, logging progress. It checks that
// the changelog exists before it wipes anything. The step must not be
// running on dir.
func Rebuild(ctx context.Context, kcfg kafka.Config, dir, app, step string, log zerolog.Logger) ([]Result, error) {
	r := Restorer{Kafka: kcfg, Topic: ChangelogTopic(app, step), Logger: log}
	n, err := r.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	if id, err := readIdentity(dir); err == nil && (id.App != app || id.Step != step) {
		log.Warn().Str("state_dir", dir).Str("was", id.App+"."+id.Step).Msg("state dir belonged to another step; replacing it")
	}
	if err := Remove(dir); err != nil {
		return nil, err
	}
	s, err := Open(dir, Options{App: app, Step: step, Logger: log})
	if err != nil {
		return nil, err
	}
	r.Store = s
	var out []Result
	for p := range n {
		res, err := r.Restore(ctx, p)
		if err != nil {
			_ = s.Close()
			return out, fmt.Errorf("rebuild %s: %w", dir, err)
		}
		out = append(out, res)
	}
	return out, s.Close()
}
