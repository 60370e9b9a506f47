package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/cmd/countstep/events"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/step"
)

// interval is how often the pipes commit, as a step does by default.
const interval = 100 * time.Millisecond

// pipeBench runs a bare franz-go consume→produce loop over the input: the
// records copied as they are, offsets committed (or a transaction ended)
// every interval.
func (b *bench) pipeBench(ctx context.Context, eos bool) error {
	name := "pipe-alos"
	if eos {
		name = "pipe-eos"
	}
	out := fmt.Sprintf("bench-%s-%d", name, time.Now().UnixNano())
	if err := b.createOutput(ctx, out); err != nil {
		return err
	}
	rd := b.readOutput(ctx, out, b.events, 5*time.Minute)
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.brokers...), kgo.ConsumerGroup(out), kgo.ConsumeTopics(b.input),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500 * time.Millisecond), kgo.DisableAutoCommit(),
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var loopErr error
	var wg sync.WaitGroup
	wg.Add(1)
	if eos {
		sess, err := kgo.NewGroupTransactSession(append(opts, kgo.TransactionalID(out), kgo.TransactionTimeout(10*time.Second))...)
		if err != nil {
			return err
		}
		defer sess.Close()
		go func() { defer wg.Done(); loopErr = transactPipe(pctx, sess, out) }()
	} else {
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return err
		}
		defer cl.Close()
		go func() { defer wg.Done(); loopErr = plainPipe(pctx, cl, out) }()
	}
	err := rd.wait()
	cancel()
	wg.Wait()
	if err != nil {
		return errors.Join(err, loopErr)
	}
	b.addRate(name, eos, rd.rate, "bare franz-go, records copied as they are")
	return nil
}

func plainPipe(ctx context.Context, cl *kgo.Client, out string) error {
	for ctx.Err() == nil {
		deadline := time.Now().Add(interval)
		for time.Now().Before(deadline) {
			pctx, cancel := context.WithDeadline(ctx, deadline)
			fs := cl.PollRecords(pctx, 10_000)
			cancel()
			fs.EachRecord(func(r *kgo.Record) {
				cl.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
			})
		}
		if err := cl.Flush(ctx); err != nil {
			return ignoreCancel(err)
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return ignoreCancel(err)
		}
	}
	return nil
}

func transactPipe(ctx context.Context, sess *kgo.GroupTransactSession, out string) error {
	for ctx.Err() == nil {
		if err := sess.Begin(); err != nil {
			return err
		}
		deadline := time.Now().Add(interval)
		for time.Now().Before(deadline) {
			pctx, cancel := context.WithDeadline(ctx, deadline)
			fs := sess.PollRecords(pctx, 10_000)
			cancel()
			fs.EachRecord(func(r *kgo.Record) {
				sess.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
			})
		}
		if _, err := sess.End(context.WithoutCancel(ctx), kgo.TransactionEndTry(ctx.Err() == nil)); err != nil {
			return ignoreCancel(err)
		}
	}
	return nil
}

func ignoreCancel(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// count is the counting step's state.
type count struct {
	N int64 `json:"n"`
}

// stepBench runs a troupe counting step over the input, in this process:
// each Tick decoded, its instance's count read, incremented and written,
// a Counted emitted.
func (b *bench) stepBench(ctx context.Context, eos bool) error {
	name, g := "step-alos", step.AtLeastOnce
	if eos {
		name, g = "step-eos", step.ExactlyOnce
	}
	app := fmt.Sprintf("bench%d", time.Now().UnixNano())
	out := app + "-counted"
	if err := b.createOutput(ctx, out); err != nil {
		return err
	}
	serde, err := events.NewSerde()
	if err != nil {
		return err
	}
	s := step.New[count](app, "count", step.Inputs(b.input))
	step.Handle(s, func(c *step.Context[count], t events.Tick) error {
		st, _ := c.State()
		st.N++
		c.SetState(st)
		return c.Emit(out, events.Counted{Seq: t.Seq, Count: st.N})
	})
	dir, err := tempDir(name)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rt, err := step.NewRuntime(s, step.Config{
		Kafka: kafka.Config{Brokers: b.brokers, Logger: b.log}, Codec: serde,
		StateDir: filepath.Join(dir, "state"), Guarantee: g, Logger: b.log,
	})
	if err != nil {
		return err
	}
	rd := b.readOutput(ctx, out, b.events, 5*time.Minute)
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(rctx) }()
	err = rd.wait()
	cancel()
	if rerr := <-runErr; err != nil {
		return errors.Join(err, rerr)
	}
	b.addRate(name, eos, rd.rate, "Avro decode/encode, Pebble state, changelog, dedupe")
	return nil
}
