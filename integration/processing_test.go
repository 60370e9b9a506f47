package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// processing waits until, for every step among the env's processes, its
// replicas together have restored and are processing every partition, as
// their logs say. /readyz alone does not tell: a step is ready before its
// group assigns it any partition (nothing to restore yet). A fault test
// that kills a broker while a partition is still restoring measures that
// restore stalling on a lost leader, not the saga riding out the loss: in
// TestSagaSurvivesBrokerLoss, payment got its partitions 4 s after /readyz,
// the broker died during their restore, and 7 sagas passed their deadline.
func (e *sagaEnv) processing(timeout time.Duration) {
	e.t.Helper()
	byStep := map[string][]*troupeProc{}
	for _, p := range e.procs {
		if p.http == "" {
			continue
		}
		step, _, _ := strings.Cut(p.name, "-")
		byStep[step] = append(byStep[step], p)
	}
	eventually(e.t, timeout, "every step processing all its partitions", func() (bool, string) {
		e.alive()
		for step, ps := range byStep {
			have := map[int32]bool{}
			for _, p := range ps {
				for _, n := range restoredPartitions(p.log.String()) {
					have[n] = true
				}
			}
			if len(have) < int(e.topo.Partitions) {
				var got []int32
				for n := range have {
					got = append(got, n)
				}
				slices.Sort(got)
				return false, fmt.Sprintf("%s processes partitions %v of %d", step, got, e.topo.Partitions)
			}
		}
		return true, ""
	})
}

// restoredPartitions returns the partitions a step's log says it restored
// and processes ("partitions restored; processing" lines, JSON logs).
func restoredPartitions(log string) []int32 {
	var out []int32
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "partitions restored; processing") {
			continue
		}
		var l struct {
			Partitions []int32 `json:"partitions"`
		}
		if i := strings.IndexByte(line, '{'); i >= 0 && json.Unmarshal([]byte(line[i:]), &l) == nil {
			out = append(out, l.Partitions...)
		}
	}
	return out
}
