package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestReplayCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, tp := range []string{"orders", "orders-copy"} {
		if _, err := adm.CreateTopic(ctx, 2, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, &kgo.Record{Topic: "orders", Partition: int32(i % 2), Key: fmt.Appendf(nil, "o%d", i), Value: fmt.Appendf(nil, "%d", i), Timestamp: t0.Add(time.Duration(i) * time.Minute)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	expect := func(wantCode int, want []string, args ...string) {
		t.Helper()
		out, errs, code := dlqTestRun(t, ctx, append(args, "--brokers", broker)...)
		if code != wantCode {
			t.Fatalf("troupe %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out, errs)
		}
		for _, w := range want {
			if !strings.Contains(out+errs, w) {
				t.Errorf("troupe %s: output does not mention %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), w, out, errs)
			}
		}
	}

	expect(exitUsage, []string{"needs --topic"}, "replay", "--from-offset", "0", "--to-topic", "x")
	expect(exitUsage, []string{"exactly one of --from-offset N and --from-time TIME"}, "replay", "--topic", "orders", "--to-topic", "x")
	expect(exitUsage, []string{"exactly one of --to-topic T2 (copy) and --group G (rewind)"}, "replay", "--topic", "orders", "--from-offset", "0")
	expect(exitUsage, []string{"--to-time goes with --to-topic"}, "replay", "--topic", "orders", "--from-offset", "0", "--group", "g", "--to-time", "-1h")
	expect(exitUsage, []string{"is not after --from-time"}, "replay", "--topic", "orders", "--from-time", "2026-05-01T10:05:00Z", "--to-time", "2026-05-01T10:00:00Z", "--to-topic", "orders-copy")
	expect(exitUsage, []string{"nope", "topic does not exist"}, "replay", "--topic", "orders", "--from-offset", "0", "--to-topic", "nope")

	expect(exitOK, []string{"copied 6 records from orders from 2026-05-01T10:05:00Z to 2026-05-01T10:11:00Z to orders-copy", "records kept their partition numbers"},
		"replay", "--topic", "orders", "--from-time", "2026-05-01T10:05:00Z", "--to-time", "2026-05-01T10:11:00Z", "--to-topic", "orders-copy")

	member, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ClientID("payment-1"), kgo.ConsumerGroup("orders.payment"), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 20; {
		fs := member.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume as a group member after %d records: %v", n, err)
		}
		n += fs.NumRecords()
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	expect(exitUsage, []string{"group orders.payment is Stable with 1 live member(s): client \"payment-1\" on", "stop every consumer of the group"},
		"replay", "--topic", "orders", "--group", "orders.payment", "--from-offset", "0")
	member.Close()
	expect(exitUsage, []string{"has no committed offsets", "--allow-new-group"}, "replay", "--topic", "orders", "--group", "orders.paymnet", "--from-offset", "0")
	expect(exitOK, []string{"PARTITION  COMMITTED  NEW", "0          10         3", "dry run: would rewind group orders.payment"},
		"replay", "--topic", "orders", "--group", "orders.payment", "--from-time", "2026-05-01T10:05:00Z", "--dry-run")
	expect(exitOK, []string{"rewound group orders.payment on orders from offset 4 (2 partitions)"},
		"replay", "--topic", "orders", "--group", "orders.payment", "--from-offset", "4")
	o, err := adm.FetchOffsets(ctx, "orders.payment")
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := o.Lookup("orders", 1); a.At != 4 {
		t.Errorf("committed %d after rewind, want 4", a.At)
	}
}
