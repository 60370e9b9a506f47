package main

import "testing"

type micro struct {
	ns, allocs int64
	err        error
}

// testingBenchmark runs f as a Go benchmark (ns and allocations per call).
func testingBenchmark(f func() error) micro {
	var m micro
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if err := f(); err != nil {
				m.err = err
				return
			}
		}
	})
	m.ns, m.allocs = r.NsPerOp(), r.AllocsPerOp()
	return m
}
