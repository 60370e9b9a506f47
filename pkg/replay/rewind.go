package replay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/troupehq/troupe/pkg/kafka"
)

// Member is a live member of a consumer group.
type Member struct {
	ID         string // the member id the coordinator gave it
	InstanceID string // static membership id, if any
	ClientID   string
	Host       string
}

// String names the member as operators know it: client id and host.
func (m Member) String() string {
	s := fmt.Sprintf("client %q on %s", m.ClientID, strings.TrimPrefix(m.Host, "/"))
	if m.InstanceID != "" {
		s += fmt.Sprintf(" (instance %q)", m.InstanceID)
	}
	return s
}

// LiveMembersError is returned by RewindGroup when the group has members:
// the coordinator refuses offset commits from outside a live group, and the
// members would overwrite the rewound offsets with their own positions.
type LiveMembersError struct {
	Group   string
	State   string
	Members []Member
}

// Error names the live members and what to do.
func (e *LiveMembersError) Error() string {
	ms := make([]string, len(e.Members))
	for i, m := range e.Members {
		ms[i] = m.String()
	}
	if len(ms) == 0 {
		return fmt.Sprintf("group %s is %s: it has live members (the broker does not list them); stop every consumer of the group (for a step, all its replicas) and retry: a group's offsets can only be rewound while it is empty",
			e.Group, e.State)
	}
	return fmt.Sprintf("group %s is %s with %d live member(s): %s; stop every consumer of the group (for a step, all its replicas) and retry: a group's offsets can only be rewound while it is empty",
		e.Group, e.State, len(e.Members), strings.Join(ms, ", "))
}

// ErrGroupBecameActive means a member joined the group between the check
// for live members and the commit, and the coordinator refused the commit.
var ErrGroupBecameActive = errors.New("group became active during the rewind")

// ErrNoCommittedOffsets means the group has never committed an offset on
// the topic: most often a misspelt group or topic name.
var ErrNoCommittedOffsets = errors.New("group has no committed offsets on the topic")

// RewindOptions tunes RewindGroup. The zero value commits, and only to a
// group that already has offsets on the topic.
type RewindOptions struct {
	// DryRun computes and returns the new offsets without committing them.
	DryRun bool
	// AllowNew sets offsets even when the group has none on the topic yet
	// (a group that has never run, or never consumed the topic), instead
	// of returning ErrNoCommittedOffsets.
	AllowNew bool
}

// PartitionRewind is one partition of a rewind.
type PartitionRewind struct {
	Partition int32
	Committed int64 // the group's offset before the rewind; -1 if none
	To        int64 // the new offset
}

// Rewind is what RewindGroup did (or, in a dry run, would do).
type Rewind struct {
	Group      string
	Topic      string
	From       Start
	DryRun     bool
	Partitions []PartitionRewind
}

// RewindGroup sets the committed offsets of group for every partition of
// topic to from (an offset, clamped to each partition's current range, or
// the first offset at or after a time), so that the group's consumers
// reprocess from there when they start. The group must be stopped: if it
// has live members RewindGroup returns a *LiveMembersError naming them and
// changes nothing. A group without offsets on the topic is refused with
// ErrNoCommittedOffsets unless opts.AllowNew.
func RewindGroup(ctx context.Context, cfg kafka.Config, group, topic string, from Start, opts RewindOptions) (Rewind, error) {
	rw := Rewind{Group: group, Topic: topic, From: from, DryRun: opts.DryRun}
	cl, err := kafka.NewClient(ctx, cfg)
	if err != nil {
		return rw, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	if err := checkStopped(ctx, adm, group); err != nil {
		return rw, err
	}
	spans, err := Spans(ctx, adm, topic, from)
	if err != nil {
		return rw, err
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, group, topic)
	if err == nil {
		err = committed.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = nil, nil
	}
	if err != nil {
		return rw, fmt.Errorf("fetch committed offsets of group %s: %w", group, err)
	}
	known := false
	set := make(kadm.Offsets)
	for _, s := range spans {
		pr := PartitionRewind{Partition: s.Partition, Committed: -1, To: s.Start}
		if o, ok := committed.Lookup(topic, s.Partition); ok && o.Err == nil && o.At >= 0 {
			pr.Committed = o.At
			known = true
		}
		rw.Partitions = append(rw.Partitions, pr)
		set.Add(kadm.Offset{Topic: topic, Partition: s.Partition, At: s.Start, LeaderEpoch: -1})
	}
	sort.Slice(rw.Partitions, func(i, j int) bool { return rw.Partitions[i].Partition < rw.Partitions[j].Partition })
	if !known && !opts.AllowNew {
		return rw, fmt.Errorf("group %s, topic %s: %w (check both names; a step's group is <app>.<step>)", group, topic, ErrNoCommittedOffsets)
	}
	if opts.DryRun {
		return rw, nil
	}
	resp, err := adm.CommitOffsets(ctx, group, set)
	if err == nil {
		err = resp.Error()
	}
	switch {
	case err == nil:
		return rw, nil
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration),
		errors.Is(err, kerr.RebalanceInProgress), errors.Is(err, kerr.StaleMemberEpoch):
		return rw, fmt.Errorf("commit offsets of group %s: %w (%v): stop its consumers and retry", group, ErrGroupBecameActive, err)
	default:
		return rw, fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
}

// checkStopped returns a *LiveMembersError if the group has members, under
// the classic protocol or the KIP-848 consumer protocol.
func checkStopped(ctx context.Context, adm *kadm.Client, group string) error {
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("describe group %s: %w", group, err)
	}
	var classicLive *LiveMembersError
	if g, ok := described[group]; ok && g.Err == nil {
		if live := liveState(g.State) || len(g.Members) > 0; live {
			e := &LiveMembersError{Group: group, State: g.State}
			for _, m := range g.Members {
				e.Members = append(e.Members, Member{ID: m.MemberID, InstanceID: deref(m.InstanceID), ClientID: m.ClientID, Host: m.ClientHost})
			}
			if len(e.Members) > 0 {
				return e
			}
			// Live but no members listed: some brokers (kfake) answer
			// so for a KIP-848 consumer group, whose members only
			// ConsumerGroupDescribe lists.
			classicLive = e
		}
		if g.ProtocolType != "" || g.State == "Empty" {
			return nil // a classic group, and empty
		}
	} else if ok && g.Err != nil && !errors.Is(g.Err, kerr.GroupIDNotFound) {
		return fmt.Errorf("describe group %s: %w", group, g.Err)
	}
	// The group is unknown to the classic protocol: it may be a KIP-848
	// consumer group, which brokers before Kafka 4.0 do not know about.
	cgs, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		if errors.Is(err, kerr.UnsupportedVersion) || errors.Is(err, kerr.GroupIDNotFound) {
			if classicLive != nil {
				return classicLive
			}
			return nil
		}
		return fmt.Errorf("describe consumer group %s: %w", group, err)
	}
	if g, ok := cgs[group]; ok && g.Err == nil && (len(g.Members) > 0 || liveState(g.State)) {
		e := &LiveMembersError{Group: group, State: g.State}
		for _, m := range g.Members {
			e.Members = append(e.Members, Member{ID: m.MemberID, InstanceID: deref(m.InstanceID), ClientID: m.ClientID, Host: m.ClientHost})
		}
		return e
	}
	if classicLive != nil {
		return classicLive
	}
	return nil
}

// liveState is true for the group states in which members are joined.
func liveState(state string) bool {
	switch strings.ToLower(state) {
	case "", "empty", "dead":
		return false
	}
	return true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
