package topology

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Purposes of the topics a topology implies (README: Concepts).
const (
	PurposeBusiness             = "business events"
	PurposeChangelog            = "step changelog"
	PurposeRetry                = "step retry"
	PurposeDLQ                  = "step dead letters"
	PurposeCoordinatorChangelog = "coordinator changelog"
	PurposeCoordinatorRetry     = "coordinator retry"
	PurposeCoordinatorDLQ       = "coordinator dead letters"
	PurposeEnded                = "saga ended"
	PurposeSchemas              = "schemas"
)

// SchemasTopic stores the built-in registry's schemas.
const SchemasTopic = "_schemas"

// DLQRetention is how long dead letters are kept: 30 days, long enough to
// notice, fix and replay across a holiday.
const DLQRetention = "2592000000"

// TopicSpec is one topic the topology needs.
type TopicSpec struct {
	Name        string
	Purpose     string
	Partitions  int32
	Replication int16
	Configs     map[string]string
}

// TopicSpecs lists every topic the topology implies, business topics first,
// then per step and per saga internal topics, then _schemas.
func (t *Topology) TopicSpecs() []TopicSpec {
	mk := func(name, purpose string, parts int32, cfg ...string) TopicSpec {
		m := map[string]string{}
		for i := 0; i+1 < len(cfg); i += 2 {
			m[cfg[i]] = cfg[i+1]
		}
		return TopicSpec{Name: name, Purpose: purpose, Partitions: parts, Replication: t.Replication, Configs: m}
	}
	var out []TopicSpec
	for _, tp := range t.Topics {
		out = append(out, mk(tp.Name, PurposeBusiness, t.Partitions, "cleanup.policy", "delete"))
	}
	for _, s := range t.Steps {
		out = append(out,
			mk(t.Changelog(s.Name), PurposeChangelog, t.Partitions, "cleanup.policy", "compact"),
			mk(t.RetryTopic(s.Name), PurposeRetry, t.Partitions, "cleanup.policy", "delete"),
			mk(t.DLQ(s.Name), PurposeDLQ, t.Partitions, "cleanup.policy", "delete", "retention.ms", DLQRetention),
		)
	}
	out = append(out,
		mk(t.CoordinatorChangelog(), PurposeCoordinatorChangelog, t.Partitions, "cleanup.policy", "compact"),
		// The coordinator runs as the step saga.<saga>: it has a step's
		// retry topic and dead letters too (troupe dlq --coordinator).
		mk(t.RetryTopic(t.CoordinatorStep()), PurposeCoordinatorRetry, t.Partitions, "cleanup.policy", "delete"),
		mk(t.DLQ(t.CoordinatorStep()), PurposeCoordinatorDLQ, t.Partitions, "cleanup.policy", "delete", "retention.ms", DLQRetention),
		mk(t.EndedTopic(), PurposeEnded, t.Partitions, "cleanup.policy", "delete"),
		mk(SchemasTopic, PurposeSchemas, 1, "cleanup.policy", "compact"),
	)
	return out
}

// Action is what a plan does with one topic.
type Action string

// The actions of a plan.
const (
	ActionCreate   Action = "create"
	ActionOK       Action = "ok"
	ActionMismatch Action = "mismatch"
)

// PlanItem is one topic of a plan: what the topology wants, what the cluster
// has, and what to do.
type PlanItem struct {
	Spec   TopicSpec
	Action Action
	// For ActionMismatch: what differs and how to fix it.
	Problems []string
}

// Plan is the difference between a topology's topics and a cluster.
type Plan struct{ Items []PlanItem }

// MakePlan compares specs with the cluster behind cl.
func MakePlan(ctx context.Context, cl *kgo.Client, specs []TopicSpec) (*Plan, error) {
	adm := kadm.NewClient(cl)
	// A direct metadata request: kadm's ListTopics answers from a cache that
	// is a few seconds old, and a plan must see topics created just before.
	req := kmsg.NewPtrMetadataRequest()
	for _, s := range specs {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(s.Name)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	partitions := map[string]int32{}
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == 0 {
			partitions[*t.Topic] = int32(len(t.Partitions))
		}
	}
	var existing []string
	for _, s := range specs {
		if _, ok := partitions[s.Name]; ok {
			existing = append(existing, s.Name)
		}
	}
	configs := map[string]map[string]string{}
	if len(existing) > 0 {
		rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return nil, fmt.Errorf("describe topic configs: %w", err)
		}
		for _, rc := range rcs {
			m := map[string]string{}
			for _, c := range rc.Configs {
				if c.Value != nil {
					m[c.Key] = *c.Value
				}
			}
			configs[rc.Name] = m
		}
	}
	p := &Plan{}
	for _, s := range specs {
		got, ok := partitions[s.Name]
		if !ok {
			p.Items = append(p.Items, PlanItem{Spec: s, Action: ActionCreate})
			continue
		}
		it := PlanItem{Spec: s, Action: ActionOK}
		if got != s.Partitions {
			it.Problems = append(it.Problems, fmt.Sprintf(
				"has %d partitions, the topology wants %d. troupe will not change it: every topic of a saga must have the same partition count so that one instance's events meet on the same partition number (co-partitioning), and adding partitions moves keys. To migrate: create a new topic with %d partitions, copy with `troupe replay --topic %s --from-offset 0 --to-topic NEW`, and switch producers; or set partitions: %d in the topology",
				got, s.Partitions, s.Partitions, s.Name, got))
		}
		if want := s.Configs["cleanup.policy"]; want != "" {
			if have := configs[s.Name]["cleanup.policy"]; have != "" && have != want {
				it.Problems = append(it.Problems, fmt.Sprintf(
					"has cleanup.policy=%s, the topology wants %s (fix: kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config cleanup.policy=%s)",
					have, want, s.Name, want))
			}
		}
		if len(it.Problems) > 0 {
			it.Action = ActionMismatch
		}
		p.Items = append(p.Items, it)
	}
	return p, nil
}

// Counts returns how many items have each action.
func (p *Plan) Counts() map[Action]int {
	m := map[Action]int{}
	for _, it := range p.Items {
		m[it.Action]++
	}
	return m
}

// Err reports every mismatch, or nil.
func (p *Plan) Err() error {
	var errs []error
	for _, it := range p.Items {
		if it.Action == ActionMismatch {
			errs = append(errs, fmt.Errorf("topic %s %s", it.Spec.Name, strings.Join(it.Problems, "; ")))
		}
	}
	return errors.Join(errs...)
}

// Apply creates every missing topic. It refuses to start when the plan has
// mismatches, so that nothing is half-applied.
func (p *Plan) Apply(ctx context.Context, cl *kgo.Client) ([]string, error) {
	if err := p.Err(); err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	var created []string
	for _, it := range p.Items {
		if it.Action != ActionCreate {
			continue
		}
		cfg := map[string]*string{}
		keys := make([]string, 0, len(it.Spec.Configs))
		for k := range it.Spec.Configs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := it.Spec.Configs[k]
			cfg[k] = &v
		}
		resp, err := adm.CreateTopic(ctx, it.Spec.Partitions, it.Spec.Replication, cfg, it.Spec.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return created, fmt.Errorf("create topic %s (%d partitions, replication %d): %w", it.Spec.Name, it.Spec.Partitions, it.Spec.Replication, err)
		}
		created = append(created, it.Spec.Name)
	}
	return created, waitVisible(ctx, cl, created)
}

// waitVisible waits until the brokers' metadata lists every topic: a
// creation is acknowledged before every broker knows of it, and a step
// started right after `topics apply` would find its input missing. It asks
// a broker each time: kadm's ListTopics answers from the client's metadata
// cache, which held the plan's "missing" for 5 s.
func waitVisible(ctx context.Context, cl *kgo.Client, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req := kmsg.NewPtrMetadataRequest()
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
		resp, err := req.RequestWith(ctx, cl)
		listed := map[string]bool{}
		if err == nil {
			for _, t := range resp.Topics {
				if t.Topic != nil && t.ErrorCode == 0 && len(t.Partitions) > 0 {
					listed[*t.Topic] = true
				}
			}
		}
		missing := 0
		for _, t := range topics {
			if !listed[t] {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var names []string
			for _, t := range topics {
				if !listed[t] {
					names = append(names, t)
				}
			}
			msg := fmt.Sprintf("%d created topic(s) still missing from the brokers' metadata after 30 s: %s (run topics apply again once the cluster settles)", missing, strings.Join(names, ", "))
			if err := errors.Join(err, ctx.Err()); err != nil {
				return fmt.Errorf("%s: %w", msg, err)
			}
			return errors.New(msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
