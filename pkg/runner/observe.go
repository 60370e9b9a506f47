package runner

import (
	"context"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
)

// Observer counts the events on a set of topics by type, from the moment it
// starts, for the summary line of `troupe dev`. It reads without a consumer
// group and commits nothing.
type Observer struct {
	mu     sync.Mutex
	counts map[string]int64
}

// NewObserver returns an empty observer.
func NewObserver() *Observer { return &Observer{counts: map[string]int64{}} }

// Run counts records of topics (from their current end) until ctx is done.
func (o *Observer) Run(ctx context.Context, cfg kafka.Config, topics []string) error {
	cl, err := kafka.NewClient(ctx, cfg,
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			typ, _ := event.Header(r, event.HeaderType)
			o.mu.Lock()
			o.counts[typ]++
			o.mu.Unlock()
		})
	}
}

// Counts returns a copy of the counts by event type.
func (o *Observer) Counts() map[string]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string]int64, len(o.counts))
	for k, v := range o.counts {
		m[k] = v
	}
	return m
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
