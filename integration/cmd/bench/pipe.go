package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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
