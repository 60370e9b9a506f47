package state

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkCommit measures what the step does every commit interval: read
// and rewrite the records of the instances it processed, across 8
// partitions, then apply the batch. It compares the store layouts and
// durability settings the package doc argues about:
//
//	go test ./pkg/state -run - -bench Commit -benchtime 2000x
//
// ns/op is one commit of 8 partitions x 64 events; events/s is reported.
func BenchmarkCommit(b *testing.B) {
	const partitions, perPartition, instances = 8, 64, 4096
	value := make([]byte, 120)
	for _, d := range []struct {
		name string
		d    Durability
	}{{"nowal", DurabilityNone}, {"wal", DurabilityWAL}, {"sync", DurabilitySync}} {
		for _, layout := range []string{"one-store", "store-per-partition"} {
			b.Run(d.name+"/"+layout, func(b *testing.B) {
				n := 1
				if layout == "store-per-partition" {
					n = partitions
				}
				stores := make([]*Store, n)
				for i := range stores {
					s, err := Open(filepath.Join(b.TempDir(), strconv.Itoa(i)), Options{App: "a", Step: "s", Durability: d.d})
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					stores[i] = s
				}
				next := 0
				b.ResetTimer()
				for range b.N {
					txns := make([]*Txn, n)
					for i, s := range stores {
						txns[i] = s.NewTxn()
					}
					for p := range int32(partitions) {
						txn := txns[int(p)%n]
						for range perPartition {
							k := InstanceKey(fmt.Sprintf("order-%d", next%instances))
							next++
							if _, _, err := txn.Get(p, k); err != nil {
								b.Fatal(err)
							}
							_ = txn.Set(p, k, value)
						}
						_ = txn.Set(p, InputOffsetKey("orders"), EncodeOffset(int64(next)))
						_ = txn.SetChangelogOffset(p, int64(next))
					}
					for _, txn := range txns {
						if err := txn.Commit(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.N*partitions*perPartition)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
