package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterSharesCollectors(t *testing.T) {
	reg := NewRegistry("test")
	mk := func() *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "x_total", Help: "x"}, []string{"step"})
	}
	a := Register(reg, mk())
	b := Register(reg, mk())
	if a != b {
		t.Fatal("a second registration of the same metric got its own collector")
	}
	a.WithLabelValues("payment").Inc()
	b.WithLabelValues("payment").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "troupe_x_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 2 {
				t.Fatalf("troupe_x_total = %v, want 2", v)
			}
			if c := Register(nil, mk()); c == nil {
				t.Fatal("nil registerer returned nil")
			}
			return
		}
	}
	t.Fatal("troupe_x_total not gathered")
}
