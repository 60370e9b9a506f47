package step

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// prepareTopics checks the inputs (they must exist, with one partition
// count) and creates the step's retry topic, compacted changelog and
// dead-letter topic if they are missing, with that count. It returns the
// count.
func prepareTopics(ctx context.Context, adm *kadm.Client, d *definition) (int32, error) {
	own := []string{d.retry(), d.changelog()}
	tds, err := adm.ListTopics(ctx, append(slices.Clone(d.inputs), own...)...)
	if err != nil {
		return 0, fmt.Errorf("describe topics of step %s: %w", d.group(), err)
	}
	var errs []error
	counts := map[int32][]string{}
	for _, in := range d.inputs {
		td, ok := tds[in]
		if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("input topic %s does not exist (create it: troupe topics apply)", in))
			continue
		}
		if td.Err != nil {
			errs = append(errs, fmt.Errorf("input topic %s: %w", in, td.Err))
			continue
		}
		n := int32(len(td.Partitions))
		counts[n] = append(counts[n], in)
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if len(counts) > 1 {
		var parts []string
		for n, ts := range counts {
			parts = append(parts, fmt.Sprintf("%d: %s", n, strings.Join(ts, ", ")))
		}
		slices.Sort(parts)
		return 0, fmt.Errorf("inputs of step %s have different partition counts (%s); co-partitioned topics need one count (fix the topology and run troupe topics apply)", d.group(), strings.Join(parts, "; "))
	}
	var n int32
	for c := range counts {
		n = c
	}

	configs := map[string]map[string]*string{
		d.retry():     {"cleanup.policy": kadm.StringPtr("delete")},
		d.changelog(): {"cleanup.policy": kadm.StringPtr("compact")},
	}
	for _, t := range own {
		td, ok := tds[t]
		if ok && td.Err == nil {
			if got := int32(len(td.Partitions)); got != n {
				return 0, fmt.Errorf("topic %s has %d partitions, the inputs of step %s have %d (delete and recreate it with %d, or run troupe topics apply)", t, got, d.group(), n, n)
			}
			continue
		}
		resp, err := adm.CreateTopic(ctx, n, -1, configs[t], t)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("create topic %s (%d partitions): %w", t, n, err)
		}
	}
	if err := checkCompacted(ctx, adm, d.changelog()); err != nil {
		return 0, err
	}
	if err := createDLQ(ctx, adm, d, n); err != nil {
		return 0, err
	}
	return n, nil
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
