package step

import (
	"fmt"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// balance runs one classic rebalance of the co-partitioning balancer:
// owned[i] is what member i holds (the same partitions of every topic).
func balance(t *testing.T, topics map[string]int32, owned [][]int32) [][]int32 {
	t.Helper()
	b := copartitioned{}
	var names []string
	for n := range topics {
		names = append(names, n)
	}
	slices.Sort(names)
	members := make([]kmsg.JoinGroupResponseMember, len(owned))
	for i, ps := range owned {
		cur := map[string][]int32{}
		if len(ps) > 0 {
			for _, n := range names {
				cur[n] = ps
			}
		}
		members[i] = kmsg.JoinGroupResponseMember{
			MemberID:         fmt.Sprintf("m%d", i),
			ProtocolMetadata: b.JoinGroupMetadata(names, cur, 5),
		}
	}
	mb, _, err := b.MemberBalancer(members)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(topics)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]int32, len(owned))
	for _, a := range plan.IntoSyncAssignment() {
		got, err := kgo.ParseConsumerSyncAssignment(a.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		fmt.Sscanf(a.MemberID, "m%d", &i)
		var first []int32
		for j, n := range names {
			ps := slices.Sorted(slices.Values(got[n]))
			if j == 0 {
				first = ps
			} else if !slices.Equal(ps, first) {
				t.Fatalf("member %s holds %s %v but %s %v: not co-partitioned", a.MemberID, names[0], first, n, ps)
			}
		}
		out[i] = first
	}
	return out
}

func TestBalancerCoPartitionsAndSticks(t *testing.T) {
	topics := map[string]int32{"orders": 8, "payments": 8, "app.step.retry": 8}
	tests := []struct {
		name  string
		owned [][]int32
		want  [][]int32
	}{
		{"fresh group", [][]int32{nil, nil, nil}, [][]int32{{0, 3, 6}, {1, 4, 7}, {2, 5}}},
		{"one member", [][]int32{nil}, [][]int32{{0, 1, 2, 3, 4, 5, 6, 7}}},
		{"stable stays", [][]int32{{0, 1, 2}, {3, 4, 5}, {6, 7}}, [][]int32{{0, 1, 2}, {3, 4, 5}, {6, 7}}},
		// A new member: the others keep their quota; what moves is held back
		// this round (cooperative) and assigned in the next.
		{"join, round 1", [][]int32{{0, 1, 2, 3}, {4, 5, 6, 7}, nil}, [][]int32{{0, 1, 2}, {4, 5, 6}, nil}},
		{"join, round 2", [][]int32{{0, 1, 2}, {4, 5, 6}, nil}, [][]int32{{0, 1, 2}, {4, 5, 6}, {3, 7}}},
		// A member left: its tasks are free and go to the others at once.
		{"leave", [][]int32{{0, 1, 2}, {3, 4, 5}}, [][]int32{{0, 1, 2, 6}, {3, 4, 5, 7}}},
		{"more members than tasks", [][]int32{{0, 1, 2, 3, 4, 5, 6, 7}, nil, nil, nil, nil, nil, nil, nil, nil, nil}, [][]int32{{0}, nil, nil, nil, nil, nil, nil, nil, nil, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := balance(t, topics, tt.owned)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("assignment %v, want %v", got, tt.want)
			}
		})
	}
}
