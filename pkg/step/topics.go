package step

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
)

// topicWait bounds how long a step waits at start for topics that are not
// visible yet (kafka.TopicWait.Max); tests shorten it.
var topicWait = kafka.DefaultTopicWait

// prepareTopics checks the inputs (they must exist, with one partition
// count) and creates the step's retry topic, compacted changelog and
// dead-letter topic if they are missing, with that count. It returns the
// count.
//
// Topics that are not visible yet are waited for (wait): a topic created
// just before the step started may not have reached every broker. An input
// still missing after the wait is an error naming it and the fix.
//
// It also returns the ids of the topics the step consumes (its inputs and
// retry topic), from the metadata it waited for, for fenceOffsets.
func prepareTopics(ctx context.Context, cl *kgo.Client, d *definition, wait kafka.TopicWait) (int32, map[string][16]byte, error) {
	adm := kadm.NewClient(cl)
	wait.Log = wait.Log.With().Str("group", d.group()).Logger()
	inputs, err := kafka.AwaitTopics(ctx, cl, d.inputs, wait)
	if me := (*kafka.MissingTopicsError)(nil); errors.As(err, &me) {
		var errs []error
		for _, in := range me.Topics {
			errs = append(errs, fmt.Errorf("input topic %s does not exist (create it: troupe topics apply); waited %s for it", in, me.Waited.Round(time.Second)))
		}
		return 0, nil, errors.Join(errs...)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("describe topics of step %s: %w", d.group(), err)
	}
	counts := map[int32][]string{}
	for _, in := range d.inputs {
		n := int32(len(inputs[in].Partitions))
		counts[n] = append(counts[n], in)
	}
	if len(counts) > 1 {
		var parts []string
		for n, ts := range counts {
			parts = append(parts, fmt.Sprintf("%d: %s", n, strings.Join(ts, ", ")))
		}
		slices.Sort(parts)
		return 0, nil, fmt.Errorf("inputs of step %s have different partition counts (%s); co-partitioned topics need one count (fix the topology and run troupe topics apply)", d.group(), strings.Join(parts, "; "))
	}
	var n int32
	for c := range counts {
		n = c
	}

	own := []string{d.retry(), d.changelog()}
	tds, err := adm.ListTopics(ctx, own...)
	if err != nil {
		return 0, nil, fmt.Errorf("describe topics of step %s: %w", d.group(), err)
	}
	configs := map[string]map[string]*string{
		d.retry():     {"cleanup.policy": kadm.StringPtr("delete")},
		d.changelog(): {"cleanup.policy": kadm.StringPtr("compact")},
	}
	for _, t := range own {
		if td, ok := tds[t]; ok && td.Err == nil {
			continue // its partition count is checked below
		}
		resp, err := adm.CreateTopic(ctx, n, -1, configs[t], t)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, nil, fmt.Errorf("create topic %s (%d partitions): %w", t, n, err)
		}
	}
	if err := createDLQ(ctx, adm, d, n); err != nil {
		return 0, nil, err
	}
	// What was just created (here or by another replica) must be visible
	// before the restore and the group ask for it.
	mine, err := kafka.AwaitTopics(ctx, cl, append(own, d.dlq()), wait)
	if err != nil {
		return 0, nil, fmt.Errorf("topics of step %s: %w", d.group(), err)
	}
	for _, t := range own {
		if got := int32(len(mine[t].Partitions)); got != n {
			return 0, nil, fmt.Errorf("topic %s has %d partitions, the inputs of step %s have %d (delete and recreate it with %d, or run troupe topics apply)", t, got, d.group(), n, n)
		}
	}
	if err := checkCompacted(ctx, adm, d.changelog()); err != nil {
		return 0, nil, err
	}
	ids := map[string][16]byte{d.retry(): mine[d.retry()].TopicID}
	for _, in := range d.inputs {
		ids[in] = inputs[in].TopicID
	}
	return n, ids, nil
}

func checkCompacted(ctx context.Context, adm *kadm.Client, topic string) error {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return fmt.Errorf("describe config of %s: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return fmt.Errorf("describe config of %s: %w", topic, err)
	}
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil && !strings.Contains(*c.Value, "compact") {
			return fmt.Errorf("changelog %s has cleanup.policy=%s; it must be compact (kafka-configs --alter --add-config cleanup.policy=compact, or run troupe topics apply)", topic, *c.Value)
		}
	}
	return nil
}

// offers848 reports whether every broker offers the KIP-848 consumer group
// heartbeat.
func offers848(ctx context.Context, adm *kadm.Client) (bool, error) {
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return false, fmt.Errorf("ask brokers for their API versions: %w", err)
	}
	if len(vs) == 0 {
		return false, nil
	}
	all := true
	vs.Each(func(v kadm.BrokerApiVersions) {
		if _, ok := v.KeyMaxVersion(kmsg.ConsumerGroupHeartbeat.Int16()); v.Err != nil || !ok {
			all = false
		}
	})
	return all, nil
}

// smallRecord is the size below which an emitted record's topic limit is
// not looked up: no topic is worth a lookup for records that small.
const smallRecord = 16 << 10

// recordLimit is the largest record topic takes, and why: franz-go's batch
// limit (dlq.MaxBytes), or the topic's max.message.bytes less a batch's
// framing if that is lower. The topic's config is read once per process,
// on the first record that needs it; if it cannot be read, the franz-go
// limit holds (and the broker has the last word).
func (rt *Runtime) recordLimit(ctx context.Context, topic string) (int, string) {
	if l, ok := rt.limits.Load(topic); ok {
		l := l.(topicLimit)
		return l.n, l.why
	}
	l := topicLimit{n: dlq.MaxBytes, why: "the producer's batch limit"}
	call := ctx
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rcs, err := kadm.NewClient(rt.cl).DescribeTopicConfigs(ctx, topic)
	var rc kadm.ResourceConfig
	if err == nil {
		rc, err = rcs.On(topic, nil)
	}
	if err != nil {
		if call.Err() != nil {
			return l.n, l.why // the call ended (shutdown, its timeout): ask again next time
		}
		rt.log.Warn().Err(err).Str(logging.FieldTopic, topic).Msg("cannot read the topic's max.message.bytes; holding its records to the producer's limit")
	}
	for _, c := range rc.Configs {
		if c.Key != "max.message.bytes" || c.Value == nil {
			continue
		}
		if n, err := strconv.Atoi(*c.Value); err == nil && n-batchFraming < l.n {
			l = topicLimit{n: n - batchFraming, why: fmt.Sprintf("the topic's max.message.bytes is %d", n)}
		}
	}
	rt.limits.Store(topic, l)
	return l.n, l.why
}

// batchFraming is what a batch of one record adds to the record's size
// (dlq.RecordSize counts the record's own framing).
const batchFraming = 64

type topicLimit struct {
	n   int
	why string
}
