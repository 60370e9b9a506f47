package step

import (
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Balancer returns the classic-protocol group balancer a step uses when the
// brokers do not offer KIP-848: cooperative and sticky like Kafka's
// cooperative-sticky, but it balances partition numbers (tasks), not
// topic-partitions, so that partition N of every input lands on the same
// member. A step's state for an instance lives with partition N; the stock
// cooperative-sticky balancer could hand orders/3 to one member and
// orders.payment.retry/3 to another.
func Balancer() kgo.GroupBalancer { return copartitioned{} }

type copartitioned struct{}

func (copartitioned) ProtocolName() string { return "troupe-copartitioned" }
func (copartitioned) IsCooperative() bool  { return true }

func (copartitioned) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	for topic, ps := range current {
		owned := kmsg.NewConsumerMemberMetadataOwnedPartition()
		owned.Topic = topic
		owned.Partitions = ps
		meta.OwnedPartitions = append(meta.OwnedPartitions, owned)
	}
	slices.SortFunc(meta.OwnedPartitions, func(a, b kmsg.ConsumerMemberMetadataOwnedPartition) int {
		return strings.Compare(a.Topic, b.Topic)
	})
	return meta.AppendTo(nil)
}

func (copartitioned) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(assignment)
}

func (b copartitioned) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	return cb, cb.MemberTopics(), err
}

// Balance gives every member floor(n/m) or ceil(n/m) of the n tasks,
// keeping the tasks members already own where it can, then assigns each
// task's partition of every topic to its member. AdjustCooperative then
// holds back tasks that move until their old owner has revoked them.
func (copartitioned) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	type member struct {
		m     *kmsg.JoinGroupResponseMember
		meta  *kmsg.ConsumerMemberMetadata
		tasks []int32
	}
	var ms []*member
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		ms = append(ms, &member{m: m, meta: meta})
	})
	plan := cb.NewPlan()
	var n int32
	for _, c := range topics {
		n = max(n, c)
	}
	if len(ms) == 0 || n == 0 {
		return plan
	}

	// The current owner of a task is the member claiming any of its
	// partitions at the highest generation (a member that missed
	// rebalances may still claim what has moved on).
	owner := make([]int, n)
	gen := make([]int32, n)
	for i := range owner {
		owner[i] = -1
	}
	for i, m := range ms {
		for _, op := range m.meta.OwnedPartitions {
			if _, ok := topics[op.Topic]; !ok {
				continue
			}
			for _, p := range op.Partitions {
				if p >= 0 && p < n && (owner[p] == -1 || m.meta.Generation > gen[p]) {
					owner[p], gen[p] = i, m.meta.Generation
				}
			}
		}
	}
	owned := make([][]int32, len(ms))
	for p := range n {
		if owner[p] >= 0 {
			owned[owner[p]] = append(owned[owner[p]], p)
		}
	}

	minQ := int(n) / len(ms)
	extra := int(n) - minQ*len(ms) // members that get minQ+1
	var free []int32
	for i, m := range ms {
		keep := min(len(owned[i]), minQ)
		m.tasks = append(m.tasks, owned[i][:keep]...)
		owned[i] = owned[i][keep:]
	}
	for i, m := range ms {
		if len(owned[i]) > 0 && extra > 0 {
			m.tasks = append(m.tasks, owned[i][0])
			owned[i] = owned[i][1:]
			extra--
		}
		free = append(free, owned[i]...)
	}
	for p := range n {
		if owner[p] == -1 {
			free = append(free, p)
		}
	}
	slices.Sort(free)
	for _, p := range free {
		// The member with the fewest tasks that may still take one.
		best := -1
		for i, m := range ms {
			room := len(m.tasks) < minQ || (len(m.tasks) == minQ && extra > 0)
			if room && (best == -1 || len(m.tasks) < len(ms[best].tasks)) {
				best = i
			}
		}
		if best == -1 { // cannot happen: quotas add up to n
			best = 0
		}
		if len(ms[best].tasks) == minQ {
			extra--
		}
		ms[best].tasks = append(ms[best].tasks, p)
	}

	for _, m := range ms {
		for topic, count := range topics {
			if !slices.Contains(m.meta.Topics, topic) {
				continue
			}
			for _, p := range m.tasks {
				if p < count {
					plan.AddPartition(m.m, topic, p)
				}
			}
		}
	}
	plan.AdjustCooperative(cb)
	return plan
}
