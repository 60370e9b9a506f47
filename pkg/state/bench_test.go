package state

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
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
	}{{"wal", DurabilityWAL}, {"nowal", DurabilityNone}, {"sync", DurabilitySync}} {
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

// BenchmarkRestore measures a restore of one changelog partition from
// kfake: records/s into the store.
//
//	go test ./pkg/state -run - -bench Restore -benchtime 1x
func BenchmarkRestore(b *testing.B) {
	const records = 200_000
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, ChangelogTopic("a", "s")))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	in := Instance{State: []byte(`{"count":12345,"status":"RUNNING"}`), Seen: []uint64{1, 2, 3, 4}}
	v := in.Append(nil)
	rs := make([]*kgo.Record, 0, records)
	for i := range records {
		rs = append(rs, &kgo.Record{Topic: ChangelogTopic("a", "s"), Key: InstanceKey(fmt.Sprintf("order-%07d", i)), Value: v})
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for range b.N {
		s, err := Open(b.TempDir(), Options{App: "a", Step: "s"})
		if err != nil {
			b.Fatal(err)
		}
		r := Restorer{Kafka: kafka.Config{Brokers: c.ListenAddrs(), Logger: zerolog.Nop()}, Store: s, Topic: ChangelogTopic("a", "s"), Logger: zerolog.Nop()}
		res, err := r.Restore(context.Background(), 0)
		if err != nil || res.Records != records {
			b.Fatalf("%+v %v", res, err)
		}
		total += res.Took
		_ = s.Close()
	}
	b.ReportMetric(float64(records*b.N)/total.Seconds(), "records/s")
}
