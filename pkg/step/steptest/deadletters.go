package steptest

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/step"
)

// Retry sets the step's retry policy. The default is the step's default
// (5 attempts, then a dead letter) with fast backoffs, 1 ms doubling up to
// 10 ms, so that a test does not wait for its retries.
func Retry(p step.RetryPolicy) Option { return func(o *options) { o.retry = &p } }

func (o *options) retryPolicy() step.RetryPolicy {
	if o.retry != nil {
		return *o.retry
	}
	return step.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
}

// NextDeadLetter returns the next dead letter the step wrote to its DLQ,
// <app>.<step>.dlq, waiting up to Timeout.
func (d *Driver) NextDeadLetter() (dlq.DeadLetter, error) {
	rec, err := d.nextRecord(d.s.Name() + ".dlq")
	if err != nil {
		return dlq.DeadLetter{}, err
	}
	return dlq.Parse(rec)
}

// Replay replays a dead letter into the step's retry topic, as `troupe dlq
// replay` does: the step handles the event again and, once it succeeds,
// runs the instance's parked events.
func (d *Driver) Replay(dl dlq.DeadLetter) error {
	return d.sendRetry(dlq.Replay(dl, d.s.Name()+".retry"))
}

// Discard discards a dead letter, as `troupe dlq discard` does: the
// instance's parked events run without it.
func (d *Driver) Discard(dl dlq.DeadLetter) error {
	return d.sendRetry(dlq.Discard(dl, d.s.Name()+".retry"))
}

func (d *Driver) sendRetry(r *kgo.Record) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.kcfg.Brokers...), kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		return fmt.Errorf("steptest: send to %s: %w", r.Topic, err)
	}
	return nil
}

// nextRecord returns the next record on topic (read_committed), waiting up
// to Timeout.
func (d *Driver) nextRecord(topic string) (*kgo.Record, error) {
	d.mu.Lock()
	r := d.readers[topic]
	if r == nil {
		var err error
		r, err = kgo.NewClient(kgo.SeedBrokers(d.kcfg.Brokers...), kgo.ConsumeTopics(topic),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			d.mu.Unlock()
			return nil, err
		}
		d.readers[topic] = r
	}
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	for {
		fs := r.PollRecords(ctx, 1)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("steptest: nothing on %s within %s", topic, Timeout)
		}
		if rs := fs.Records(); len(rs) > 0 {
			return rs[0], nil
		}
	}
}
