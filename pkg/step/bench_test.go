package step

import (
	"testing"
	"time"
)

// BenchmarkCountStep measures a counting step (read state, update, write,
// emit) on kfake, 8 partitions, 1,000 instances, from a pre-filled input:
//
//	go test ./pkg/step -run - -bench CountStep -benchtime 1x
//
// It reports events/s; the figure is kfake's and this machine's, not a
// real broker's (see make bench).
func BenchmarkCountStep(b *testing.B) {
	const n, instances = 50_000, 1000
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		b.Run(g.String(), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				e := newEnv(b, 8)
				e.produce(0, n, instances)
				cfg := e.config(b.TempDir(), g)
				s := countStep(e.app)
				b.StartTimer()
				t0 := time.Now()
				r := start(b, s, cfg)
				for counterValue(b, r.rt.m.processed) < n {
					time.Sleep(5 * time.Millisecond)
				}
				total += time.Since(t0)
				b.StopTimer()
				if err := r.stop(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
		})
	}
}
