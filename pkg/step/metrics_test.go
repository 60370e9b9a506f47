package step

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
)

// lags reads troupe_step_consumer_lag from reg by "topic/partition".
func lags(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "troupe_step_consumer_lag" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var topic, p string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "topic":
					topic = l.GetValue()
				case "partition":
					p = l.GetValue()
				}
			}
			out[topic+"/"+p] = m.GetGauge().GetValue()
		}
	}
	return out
}

// Input written by transactions (as every troupe step writes its outputs)
// ends each transaction with a marker the consumer is never handed: once
// the step has consumed everything, its lag is 0 on every partition, not
// the 1 of the marker after the last record.
func TestConsumerLagSkipsTransactionMarkers(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const parts, txns, perTxn = 4, 5, 40
			e := newEnv(t, parts)
			prod, err := kgo.NewClient(kgo.SeedBrokers(e.kcfg.Brokers...), kgo.TransactionalID(e.app+"-producer"))
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			produceTxns := func(first int) {
				for tx := range txns {
					if err := prod.BeginTransaction(); err != nil {
						t.Fatal(err)
					}
					var rs []*kgo.Record
					for i := range perTxn {
						n := first + tx*perTxn + i
						rs = append(rs, e.tick("ticks", fmt.Sprintf("i-%03d", n%16), int64(n), event.NewID()))
					}
					if err := prod.ProduceSync(t.Context(), rs...).FirstErr(); err != nil {
						t.Fatal(err)
					}
					if err := prod.EndTransaction(t.Context(), kgo.TryCommit); err != nil {
						t.Fatal(err)
					}
				}
			}
			produceTxns(0)
			cfg := e.config(t.TempDir(), g)
			reg := prometheus.NewRegistry()
			cfg.Registerer = reg
			r := start(t, countStep(e.app), cfg)
			produceTxns(txns * perTxn) // some while it runs
			const n = 2 * txns * perTxn
			if outs := e.counted(n, 20*time.Second); len(outs) < n {
				t.Fatalf("%d outputs for %d inputs", len(outs), n)
			}
			// Every input partition (ticks, and the step's retry topic,
			// which it consumes too) at 0.
			zero := func(got map[string]float64) bool {
				for p := range parts {
					if _, ok := got[fmt.Sprintf("ticks/%d", p)]; !ok {
						return false
					}
				}
				for _, v := range got {
					if v != 0 {
						return false
					}
				}
				return true
			}
			deadline := time.Now().Add(15 * time.Second)
			for got := lags(t, reg); !zero(got); got = lags(t, reg) {
				if time.Now().After(deadline) {
					t.Fatalf("consumer lag %v after consuming everything, want 0 on every partition of ticks", got)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// It stays 0: nothing reads the markers as lag again.
			time.Sleep(time.Second)
			if got := lags(t, reg); !zero(got) {
				t.Fatalf("consumer lag %v a second later, want 0", got)
			}
			if got := counterValue(t, r.rt.m.processed); got != n {
				t.Fatalf("processed %v, want %d", got, n)
			}
		})
	}
}

// The state store's memory is reported per step and kind, while the step
// runs (the memtable holds what it wrote), and not after it stops.
func TestStateMemoryMetric(t *testing.T) {
	e := newEnv(t, 2)
	reg := prometheus.NewRegistry()
	cfg := e.config(t.TempDir(), ExactlyOnce)
	cfg.Registerer = reg
	r := start(t, countStep(e.app), cfg)
	e.produce(0, 200, 10)
	e.counted(200, 30*time.Second)
	mem := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "troupe_state_memory_bytes" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["app"] != e.app || labels["step"] != "count" {
					t.Errorf("labels %v", labels)
				}
				out[labels["kind"]] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	if m := mem(); m["memtables"] <= 0 || len(m) != 2 {
		t.Fatalf("while running: %v, want memtables > 0 and block_cache", m)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if m := mem(); m["memtables"] != 0 || m["block_cache"] != 0 {
		t.Fatalf("after stop: %v, want 0", m)
	}
}
