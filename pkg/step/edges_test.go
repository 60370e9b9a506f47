package step

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
)

// produceTo sends records to the partitions they name (as a producer with
// another partitioner than troupe's would place them).
func (e *env) produceTo(rs ...*kgo.Record) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kcfg.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// A record in another partition than its key's is never handled there: a
// step outside a saga produces it again to its key's partition and handles
// the copy, once; the instance's state lives in one partition.
func TestMisplacedRecordIsMoved(t *testing.T) {
	const parts = 4
	e := newEnv(t, parts)
	key := "i-moved"
	right := partitionOf(key, parts)
	r := e.tick("ticks", key, 1, event.NewID())
	r.Partition = (right + 1) % parts
	e.produceTo(r)
	e.produce(2, 1, 1) // a well-placed record of instance i-000
	dir := t.TempDir()
	run := start(t, countStep(e.app), e.config(dir, ExactlyOnce))
	outs := e.counted(2, 20*time.Second)
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("%d outputs, want 2 (the moved record handled once, and the other)", len(outs))
	}
	if got := counterValue(t, run.rt.m.events.WithLabelValues(run.rt.m.app, run.rt.m.step, OutcomeMoved)); got != 1 {
		t.Fatalf("moved %v records, want 1", got)
	}
	if got := counts(t, dir, e.app, parts); got[key] != 1 {
		t.Fatalf("instance %s counted %d times, want 1 (%v)", key, got[key], got)
	}
	moved := e.consume("ticks", 3, 5*time.Second)
	var copies int
	for _, m := range moved {
		if from, ok := event.Header(m, HeaderMovedFrom); ok {
			copies++
			if m.Partition != right || !strings.HasPrefix(from, "ticks/") {
				t.Errorf("copy in partition %d (want %d), moved from %q", m.Partition, right, from)
			}
		}
	}
	if copies != 1 {
		t.Fatalf("%d copies in the input topic, want 1", copies)
	}
}

// Headers from other producers: none at all is accepted (the type is the
// schema's, the id derived from the place); a short ce_type and one that
// contradicts the schema are dead letters that say so.
func TestTypeFromTheSchema(t *testing.T) {
	e := newEnv(t, 1)
	bare := e.tick("ticks", "i-bare", 1, "")
	bare.Headers = nil
	short := e.tick("ticks", "i-short", 2, event.NewID())
	short.Headers = setHeader(short.Headers, event.HeaderType, "Tick")
	wrong := e.tick("ticks", "i-wrong", 3, event.NewID())
	wrong.Headers = setHeader(wrong.Headers, event.HeaderType, "troupe.test.Other")
	unrelated := e.tick("ticks", "i-other", 4, event.NewID())
	unrelated.Headers = setHeader(unrelated.Headers, event.HeaderType, "Nope")
	if err := e.cl.ProduceSync(context.Background(), bare, short, wrong, unrelated).FirstErr(); err != nil {
		t.Fatal(err)
	}
	s := countStep(e.app)
	Handle(s, func(c *Context[counter], o Other) error { return nil })
	run := start(t, s, e.config(t.TempDir(), ExactlyOnce))
	outs := e.counted(1, 20*time.Second)
	if len(outs) != 1 || outs[0].key != "i-bare" {
		t.Fatalf("outputs %+v, want one for i-bare (no headers)", outs)
	}
	dls := e.consume(e.app+".count.dlq", 3, 20*time.Second)
	errs := map[string]string{}
	for _, d := range dls {
		msg, _ := event.Header(d, dlq.HeaderError)
		errs[string(d.Key)] = msg
	}
	if m := errs["i-short"]; !strings.Contains(m, `ce_type "Tick" is not a known event type`) || !strings.Contains(m, "did you mean troupe.test.Tick?") {
		t.Errorf("short ce_type: dead letter %q", m)
	}
	if m := errs["i-wrong"]; !strings.Contains(m, "ce_type troupe.test.Other contradicts the record's schema troupe.test.Tick") {
		t.Errorf("contradicting ce_type: dead letter %q", m)
	}
	if m := errs["i-other"]; !strings.Contains(m, `ce_type "Nope" is not a known event type`) {
		t.Errorf("unknown ce_type: dead letter %q", m)
	}
	if got := counterValue(t, run.rt.m.withoutID); got != 1 {
		t.Errorf("events without id %v, want 1", got)
	}
}

func setHeader(hs []kgo.RecordHeader, key, value string) []kgo.RecordHeader {
	out := withoutHeader(hs, key)
	return append(out, kgo.RecordHeader{Key: key, Value: []byte(value)})
}
