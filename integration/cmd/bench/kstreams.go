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
// bytes and emits the count as a long: it does no Avro work.
func (b *bench) kstreamsBench(ctx context.Context, eos bool) error {
	name, g := "kstreams-alos", "at_least_once"
	if eos {
		name, g = "kstreams-eos", "exactly_once_v2"
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
	p, err := peers.StartKafkaStreams(ctx, cp, peers.KafkaStreamsOptions{
		Brokers: b.brokers, Input: b.input, Output: out, AppID: app, Guarantee: g, StateDir: dir, Threads: 1,
	}, os.Stderr)
	if err != nil {
		return err
	}
	err = rd.wait()
	if serr := p.Stop(); err != nil {
		return errors.Join(err, serr)
	}
	b.addRate(name, eos, rd.rate, "Kafka Streams 4.3.1, 1 stream thread, RocksDB store with changelog, commit every 100 ms; values as bytes (no Avro)")
	return nil
}
