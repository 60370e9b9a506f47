package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/troupehq/troupe/integration/peers"
)

// kstreamsBench runs the same count in Kafka Streams (integration/peers)
// over the input, when Java and Maven are here. The peer keeps the value as
// bytes and emits the count as a long: it does no Avro work. Its CPU is
// metered like the step's, from its first output to its last.
func (b *bench) kstreamsBench(ctx context.Context, eos bool, threads int) error {
	name, g := "kstreams-alos", "at_least_once"
	if eos {
		name, g = "kstreams-eos", "exactly_once_v2"
	}
	if threads > 1 {
		name += fmt.Sprintf("-%dt", threads)
	}
	cp, err := peers.BuildKafkaStreams(ctx, os.Stderr)
	if err != nil {
		if !slices.ContainsFunc(b.rows, func(r *row) bool { return r.name == name }) {
			b.rows = append(b.rows, &row{name: name, figure: "not run", note: err.Error()})
		}
		return nil
	}
	app := fmt.Sprintf("bench%d", time.Now().UnixNano())
	out := app + "-counted"
	if err := b.createOutput(ctx, out); err != nil {
		return err
	}
	dir, err := tempDir(name)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rd := b.readOutput(ctx, out, b.events, 5*time.Minute)
	// The peer's JVM is found by its command line (its app id is this
	// run's), as soon as it exists.
	m := meterCPU(func() int { return findPid("troupe.bench.CountStreams", "--app-id", app) })
	p, err := peers.StartKafkaStreams(ctx, cp, peers.KafkaStreamsOptions{
		Brokers: b.brokers, Input: b.input, Output: out, AppID: app, Guarantee: g, StateDir: dir, Threads: threads,
	}, os.Stderr)
	if err != nil {
		m.finish()
		return err
	}
	err = rd.wait()
	m.finish()
	if serr := p.Stop(); err != nil {
		return errors.Join(err, serr)
	}
	unit := "stream thread"
	if threads > 1 {
		unit += "s"
	}
	b.addRate(name, eos, rd.rate, fmt.Sprintf("Kafka Streams 4.3.1, %d %s, RocksDB store with changelog, commit every 100 ms; values as bytes (no Avro)", threads, unit))
	b.addUsage(name, usageOf(m, rd, b.events))
	return nil
}
