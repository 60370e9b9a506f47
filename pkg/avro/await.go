package avro

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/sr"
)

// DefaultRegistryWait is how long a process waits at start, by default,
// for the schema registry to answer: started together (compose,
// Kubernetes), the registry may still be starting or loading its topic.
const DefaultRegistryWait = 45 * time.Second

// Await waits until the registry answers (GET /schemas/types), looking
// again with a backoff from 100 ms to 1 s, logging every 5 s while it
// waits, for at most max (0: DefaultRegistryWait). Any answer below 500
// counts but 401 (no token, or a wrong one), which fails at once with an
// error wrapping ErrRegistryAuth. A step that started without it would spend its retries on its
// first records and dead-letter them. It fails with an error wrapping
// ErrRegistryUnavailable that names the URL and the setting, or returns
// ctx's error when ctx is done.
func (c *RegistryClient) Await(ctx context.Context, max time.Duration, log zerolog.Logger) error {
	if max <= 0 {
		max = DefaultRegistryWait
	}
	start, lastLog := time.Now(), time.Now()
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.cl.SupportedTypes(actx)
		cancel()
		if err == nil {
			if waited := time.Since(start); waited > time.Second {
				log.Info().Str("registry", c.url).Dur("waited", waited).Msg("schema registry answers")
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if re := (*sr.ResponseError)(nil); errors.As(err, &re) && re.StatusCode == 401 {
			return c.wrap(ctx, "ask the schema registry for its schema types", err)
		}
		if re := (*sr.ResponseError)(nil); errors.As(err, &re) && re.StatusCode < 500 {
			return nil // it answers (a registry without /schemas/types says 404)
		}
		err = c.wrap(ctx, "ask the schema registry for its schema types", err)
		waited := time.Since(start)
		if waited >= max {
			return fmt.Errorf("%w (waited %s)", err, waited.Round(time.Second))
		}
		if now := time.Now(); now.Sub(lastLog) >= 5*time.Second {
			log.Info().Str("registry", c.url).Err(err).Dur("waited", waited).Dur("max_wait", max).Msg("waiting for the schema registry")
			lastLog = now
		}
		t := time.NewTimer(min(backoff, max-waited))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}
