package step

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
)

// The guards at the saga's edges (README: Concepts, Sagas): records from
// producers that are not troupe are accepted as they are, but never handled
// as if they were something else.

// HeaderMovedFrom marks a record the runtime produced again to its key's
// partition: it names the place it was found, as "topic/partition@offset".
const HeaderMovedFrom = "troupe_moved_from"

// keyPartitioner places keys as troupe's producers do (murmur2, as Java's
// default). Made once: each ForTopic seeds a random source, which cost a
// third of a step's CPU when it was made per record (make bench's profile).
var keyPartitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

// partitionOf is the partition troupe's partitioner gives instance id
// among n. The keyed path of the partitioner holds no state, so the loops
// of several steps may share it.
func partitionOf(id string, n int32) int32 {
	return int32(keyPartitioner.Partition(&kgo.Record{Key: []byte(id)}, int(n)))
}

// placeGuard checks that r is in the partition of its instance (the
// partitioning invariant). A record found elsewhere, as librdkafka's
// default CRC32 partitioner places most keys, is never handled there: a
// step outside a saga produces it again to its partition, in this
// interval's transaction (the copy keeps its headers, and its ce_id, or
// the id derived from the original place, so that a second copy is
// dropped as a duplicate); a step of a saga leaves that to the saga's
// coordinator, which consumes every topic of the saga, so that one copy is
// made. The retry topic and watched topics are written by partition and
// exempt.
func (c *cycle) placeGuard(j *job, meta event.Metadata, id string) (verdict, bool) {
	rt, r := c.rt, j.rec
	if rt.partitions <= 0 || r.Topic == rt.def.retry() {
		return done, false
	}
	want := partitionOf(id, rt.partitions)
	if want == r.Partition {
		return done, false
	}
	place := event.DerivedID(r.Topic, r.Partition, r.Offset)
	outcome := OutcomeMisplaced
	if rt.cfg.Saga == nil {
		outcome = OutcomeMoved
		hs := withoutHeader(r.Headers, HeaderMovedFrom)
		if _, ok := event.Header(r, event.HeaderID); !ok {
			hs = append(hs, kgo.RecordHeader{Key: event.HeaderID, Value: []byte(meta.ID)})
		}
		hs = append(hs, kgo.RecordHeader{Key: HeaderMovedFrom, Value: []byte(place)})
		rt.cl.Produce(c.pctx, &kgo.Record{Topic: r.Topic, Key: []byte(id), Value: r.Value, Timestamp: r.Timestamp, Headers: hs}, c.promise)
	}
	c.count(outcome)
	rt.warnProducer("misplaced", meta.Source, func(e *zerolog.Event) {
		e.Str(logging.FieldSaga, id).Str(logging.FieldTopic, r.Topic).Int32(logging.FieldPartition, r.Partition).
			Int64(logging.FieldOffset, r.Offset).Int32("key_partition", want).Str("outcome", outcome).
			Msgf("record in partition %d, but its key belongs in %d (murmur2, Java's default partitioner): its producer uses another partitioner, which splits sagas; set partitioner=murmur2_random (librdkafka: kcat -X partitioner=murmur2_random, confluent-kafka 'partitioner': 'murmur2_random')", r.Partition, want)
	})
	return done, true
}

// writerNamer is what typeGuard needs of the codec (an *avro.Serde).
type writerNamer interface {
	WriterName(ctx context.Context, value []byte) (string, error)
}

// typeGuard settles a record's type: its ce_type, checked against the
// record name of the schema its value was written with, or, without
// ce_type, that name. A ce_type that contradicts the schema, or names no
// known type (a short name, a typo), is a dead letter that says so, for a
// step that handles the schema's type; the others ignore it.
func (c *cycle) typeGuard(r *kgo.Record, meta *event.Metadata) (verdict, bool) {
	rt := c.rt
	wn, ok := rt.cfg.Codec.(writerNamer)
	if !ok || (meta.Type != "" && rt.known[meta.Type] && !rt.wants(r.Topic, meta.Type)) {
		return done, false // not ours: not worth a look at the value
	}
	name, err := wn.WriterName(c.ctx, r.Value)
	switch {
	case err != nil:
		if meta.Type != "" && !rt.wants(r.Topic, meta.Type) {
			return done, false // undecodable, but not ours to judge
		}
		return failed(decodeFailure(err)), true
	case meta.Type == "":
		meta.Type = name
	case meta.Type != name:
		if !rt.wants(r.Topic, name) {
			rt.m.ignored.Inc()
			return done, true
		}
		return failed(Permanent(typeMismatch(meta.Type, name, rt.known))), true
	}
	return done, false
}

func typeMismatch(ceType, schema string, known map[string]bool) error {
	if known[ceType] {
		return fmt.Errorf("ce_type %s contradicts the record's schema %s (the schema id in its value): fix the producer's ce_type header", ceType, schema)
	}
	hint := ""
	if strings.HasSuffix(schema, "."+ceType) {
		hint = fmt.Sprintf(" (did you mean %s? ce_type is the full name, namespace included)", schema)
	}
	return fmt.Errorf("ce_type %q is not a known event type; the record's schema is %s%s", ceType, schema, hint)
}

// orphan reports whether r, an event of type typ about to be handled, is
// an orphan (see Saga.Sources): counted, logged once a minute per
// producer, not handled.
func (c *cycle) orphan(r *kgo.Record, meta event.Metadata, id, typ string) bool {
	rt := c.rt
	sc := rt.cfg.Saga
	if sc == nil || typ == sc.Trigger || typ == sc.Command || r.Topic == sc.EndedTopic {
		return false
	}
	sources, ok := sc.Sources[typ]
	if !ok || slices.Contains(sources, meta.Source) {
		return false
	}
	c.count(OutcomeOrphan)
	rt.warnProducer("orphan", meta.Source, func(e *zerolog.Event) {
		e.Str(logging.FieldSaga, id).Str(logging.FieldTopic, r.Topic).Int32(logging.FieldPartition, r.Partition).
			Int64(logging.FieldOffset, r.Offset).Str("type", typ).Strs("emitted_by", sources).
			Msgf("%s not handled: no step of the saga emitted it (ce_source %q; the saga's steps that emit it: %s), so its saga never started here; a saga begins with %s", typ, meta.Source, strings.Join(sources, ", "), sc.Trigger)
	})
	return true
}

// warnProducer logs, at most once a minute per kind and producer
// (ce_source), a warning about that producer's records.
func (rt *Runtime) warnProducer(kind, source string, log func(*zerolog.Event)) {
	k := kind + "\x00" + source
	now := time.Now()
	if last, ok := rt.warned[k]; ok && now.Sub(last) < time.Minute {
		return
	}
	rt.warned[k] = now
	log(rt.log.Warn().Str("ce_source", source))
}
