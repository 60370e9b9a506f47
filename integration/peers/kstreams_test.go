package peers_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/integration/peers"
)

func TestMain(m *testing.M) { kafkaharness.Main(m) }

const (
	partitions = 8
	records    = 50_000
	keys       = 1_000
)

// TestKafkaStreamsCount runs the Kafka Streams peer under both guarantees
// on the same input and checks its work: one output per input, and each
// key's outputs are 1, 2, ..., its input count, in order. It logs the
// throughput the consumer saw (first to last output record).
func TestKafkaStreamsCount(t *testing.T) {
	if kafkaharness.Backend() == kafkaharness.BackendKfake {
		t.Skip("the Kafka Streams peer needs a real broker, not kfake")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	cp, err := peers.BuildKafkaStreams(ctx, t.Output())
	if err != nil {
		if errors.Is(err, kafkaharness.ErrToolMissing) && os.Getenv("CI") != "true" && os.Getenv("CI") != "1" {
			t.Skip(err)
		}
		t.Fatal(err)
	}

	brokers := kafkaharness.Brokers()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	run := hex.EncodeToString(randBytes(4))
	input := "peers-kstreams-in-" + run
	if _, err := adm.CreateTopic(ctx, partitions, -1, nil, input); err != nil {
		t.Fatalf("create %s: %v", input, err)
	}

	// Opaque values of an Avro-ish size; the peer does not look at them.
	want := make(map[string]int64, keys)
	recs := make([]*kgo.Record, records)
	value := randBytes(96)
	for i := range recs {
		k := fmt.Sprintf("k-%04d", i%keys)
		want[k]++
		recs[i] = &kgo.Record{Topic: input, Key: []byte(k), Value: value}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	for _, g := range []string{peers.AtLeastOnce, peers.ExactlyOnceV2} {
		t.Run(g, func(t *testing.T) {
			output := "peers-kstreams-out-" + g + "-" + run
			// LogAppendTime: each output's timestamp is when the broker
			// appended it, a measure of the peer that the consumer's lag
			// and read_committed's batching do not blur.
			appendTime := map[string]*string{"message.timestamp.type": kadm.StringPtr("LogAppendTime")}
			if _, err := adm.CreateTopic(ctx, partitions, -1, appendTime, output); err != nil {
				t.Fatalf("create %s: %v", output, err)
			}
			// A short FetchMaxWait: franz-go's first fetch may long-poll only
			// the partitions whose start offsets loaded first, and outputs
			// on the others would wait out the 5 s default.
			consumer, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
				kgo.ConsumeTopics(output),
				kgo.FetchMaxWait(100*time.Millisecond),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			if err != nil {
				t.Fatal(err)
			}
			defer consumer.Close()

			// The peer starts in the background while this goroutine
			// already polls, so that the consumer sees the first output as
			// soon as it is readable.
			pollCtx, pollCancel := context.WithTimeout(ctx, 90*time.Second)
			defer pollCancel()
			type startResult struct {
				peer *peers.Peer
				err  error
				took time.Duration
			}
			startc := make(chan startResult, 1)
			opts := peers.KafkaStreamsOptions{
				Brokers:   brokers,
				Input:     input,
				Output:    output,
				AppID:     "peers-kstreams-" + g + "-" + run,
				Guarantee: g,
				StateDir:  t.TempDir(),
			}
			begin := time.Now()
			go func() {
				p, err := peers.StartKafkaStreams(ctx, cp, opts, t.Output())
				startc <- startResult{p, err, time.Since(begin)}
				if err != nil {
					pollCancel() // the poll loop then reports err
				}
			}()
			var peer *peers.Peer
			takeStart := func(r startResult) {
				if r.err != nil {
					t.Fatal(r.err)
				}
				peer = r.peer
				t.Logf("peer RUNNING %s after start", r.took.Round(time.Millisecond))
			}
			t.Cleanup(func() {
				if peer == nil {
					peer = (<-startc).peer
				}
				if peer != nil {
					_ = peer.Stop()
				}
			})

			got := make(map[string]int64, keys)
			seen := 0
			var first, last, firstAppend, lastAppend time.Time
			check := func(fs kgo.Fetches) {
				fs.EachError(func(topic string, p int32, err error) {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("fetch %s/%d: %v", topic, p, err)
					}
				})
				now := time.Now()
				fs.EachRecord(func(r *kgo.Record) {
					if seen == 0 {
						first = now
					}
					last = now
					if firstAppend.IsZero() || r.Timestamp.Before(firstAppend) {
						firstAppend = r.Timestamp
					}
					if r.Timestamp.After(lastAppend) {
						lastAppend = r.Timestamp
					}
					seen++
					if len(r.Value) != 8 {
						t.Fatalf("output %s/%d@%d: value has %d bytes, want 8", r.Topic, r.Partition, r.Offset, len(r.Value))
					}
					k, n := string(r.Key), int64(binary.BigEndian.Uint64(r.Value))
					if n != got[k]+1 {
						t.Fatalf("key %s: output %d after %d (duplicate or lost output)", k, n, got[k])
					}
					got[k] = n
				})
			}
			for seen < records {
				fs := consumer.PollFetches(pollCtx)
				if peer == nil {
					select {
					case r := <-startc:
						takeStart(r)
					default:
					}
				}
				if pollCtx.Err() != nil {
					t.Fatalf("saw %d of %d outputs before %v", seen, records, pollCtx.Err())
				}
				check(fs)
			}
			if peer == nil {
				takeStart(<-startc)
			}
			if err := peer.Stop(); err != nil {
				t.Fatal(err)
			}
			// Nothing more may come: one output per input.
			extraCtx, extraCancel := context.WithTimeout(ctx, time.Second)
			defer extraCancel()
			check(consumer.PollFetches(extraCtx))
			if seen != records {
				t.Fatalf("saw %d outputs for %d inputs", seen, records)
			}
			for k, n := range want {
				if got[k] != n {
					t.Errorf("key %s: final count %d, want %d", k, got[k], n)
				}
			}
			d, da := last.Sub(first), lastAppend.Sub(firstAppend)
			t.Logf("%s: %d outputs; consumer saw first to last in %s: %.0f records/s; broker appended first to last in %s: %.0f records/s",
				g, seen, d.Round(time.Millisecond), float64(seen-1)/d.Seconds(), da.Round(time.Millisecond), float64(seen-1)/da.Seconds())
		})
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
