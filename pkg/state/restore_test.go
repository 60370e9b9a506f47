package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
)

type changelogEnv struct {
	t     *testing.T
	kcfg  kafka.Config
	txn   *kgo.Client
	topic string
}

func newChangelogEnv(t *testing.T) *changelogEnv {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &changelogEnv{t: t, kcfg: kafka.Config{Brokers: c.ListenAddrs(), Logger: zerolog.Nop()}, topic: ChangelogTopic("orders", "payment")}
	e.txn, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("test"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.txn.Close)
	if _, err := kadm.NewClient(e.txn).CreateTopic(context.Background(), 2, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, e.topic); err != nil {
		t.Fatal(err)
	}
	return e
}

// write produces kvs ("key=value", "key=" is a tombstone) to partition p in
// one transaction that commits or aborts.
func (e *changelogEnv) write(p int32, commit bool, kvs ...string) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.txn.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		r := &kgo.Record{Topic: e.topic, Partition: p, Key: InstanceKey(k)}
		if v != "" {
			r.Value = []byte(v)
		}
		if err := e.txn.ProduceSync(ctx, r).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		e.t.Fatal(err)
	}
}

func dump(t *testing.T, s *Store, p int32) string {
	var parts []string
	err := s.Scan(p, nil, func(k, v []byte) error {
		parts = append(parts, string(k[1:])+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(parts, " ")
}

func TestRestoreAppliesCommittedChanges(t *testing.T) {
	e := newChangelogEnv(t)
	e.write(0, true, "a=1", "b=1", "c=1")
	e.write(0, false, "a=aborted", "d=aborted")
	e.write(0, true, "b=2", "c=")
	e.write(1, true, "z=other partition")

	s := openTest(t, t.TempDir())
	defer s.Close()
	var counted int
	r := Restorer{Kafka: e.kcfg, Store: s, Topic: e.topic, Logger: zerolog.Nop(), OnRecords: func(n int) { counted += n }}
	res, err := r.Restore(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(t, s, 0); got != "a=1 b=2" {
		t.Fatalf("restored %q, want a=1 b=2", got)
	}
	if res.Records != 5 || counted != 5 {
		t.Fatalf("restored %d records (%d counted), want 5 (aborted ones and markers are not records)", res.Records, counted)
	}
	off, _ := s.ChangelogOffset(0)
	if off != res.To || off == 0 {
		t.Fatalf("stored offset %d, result %+v", off, res)
	}

	// Later changes: a restore continues from the stored offset.
	e.write(0, true, "a=3", "e=1")
	res, err = r.Restore(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != off || res.Records != 2 {
		t.Fatalf("second restore %+v, want from %d with 2 records", res, off)
	}
	if got := dump(t, s, 0); got != "a=3 b=2 e=1" {
		t.Fatalf("restored %q", got)
	}
	if got := dump(t, s, 1); got != "" {
		t.Fatalf("partition 1 restored as a side effect: %q", got)
	}
}

func TestRestoreWaitsForAnOpenTransaction(t *testing.T) {
	e := newChangelogEnv(t)
	e.write(0, true, "a=1")
	ctx := context.Background()
	if err := e.txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := e.txn.ProduceSync(ctx, &kgo.Record{Topic: e.topic, Partition: 0, Key: InstanceKey("a"), Value: []byte("2")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		_ = e.txn.EndTransaction(ctx, kgo.TryCommit)
	}()
	s := openTest(t, t.TempDir())
	defer s.Close()
	r := Restorer{Kafka: e.kcfg, Store: s, Topic: e.topic, Logger: zerolog.Nop()}
	start := time.Now()
	if _, err := r.Restore(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, s, 0); got != "a=2" {
		t.Fatalf("restored %q after %s, want the transaction that was open at the start (a=2)", got, time.Since(start))
	}
}

func TestRestoreResetsAnOffsetBeyondTheEnd(t *testing.T) {
	e := newChangelogEnv(t)
	e.write(0, true, "a=1")
	s := openTest(t, t.TempDir())
	defer s.Close()
	txn := s.NewTxn()
	_ = txn.Set(0, InstanceKey("stale"), []byte("x"))
	_ = txn.SetChangelogOffset(0, 1000) // from a changelog since deleted and recreated
	_ = txn.Commit()
	r := Restorer{Kafka: e.kcfg, Store: s, Topic: e.topic, Logger: zerolog.Nop()}
	res, err := r.Restore(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reset == "" {
		t.Fatal("no reset")
	}
	if got := dump(t, s, 0); got != "a=1" {
		t.Fatalf("restored %q", got)
	}
}

func TestRebuild(t *testing.T) {
	e := newChangelogEnv(t)
	for i := range 50 {
		e.write(int32(i%2), true, fmt.Sprintf("k%02d=%d", i, i))
	}
	dir := t.TempDir()
	s := openTest(t, dir)
	txn := s.NewTxn()
	_ = txn.Set(0, InstanceKey("junk"), []byte("x"))
	_ = txn.Commit()
	_ = s.Close()

	results, err := Rebuild(context.Background(), e.kcfg, dir, "orders", "payment", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].Records+results[1].Records != 50 {
		t.Fatalf("results %+v", results)
	}
	s = openTest(t, dir)
	defer s.Close()
	if got := dump(t, s, 0); strings.Contains(got, "junk") || !strings.HasPrefix(got, "k00=0 k02=2") {
		t.Fatalf("partition 0 after rebuild: %q", got)
	}

	if _, err := Rebuild(context.Background(), e.kcfg, t.TempDir(), "orders", "nosuch", zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("rebuild of a step without changelog: %v", err)
	}
}

func TestRestoreResetsStateTooOldForTombstones(t *testing.T) {
	e := newChangelogEnv(t)
	e.write(0, true, "a=1", "b=1")
	s := openTest(t, t.TempDir())
	defer s.Close()
	r := Restorer{Kafka: e.kcfg, Store: s, Topic: e.topic, Logger: zerolog.Nop(), MaxAge: time.Hour}
	if _, err := r.Restore(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	// Days later, b was deleted elsewhere and its tombstone compacted
	// away: only a's new value is left to read.
	e.write(0, true, "a=2")
	_ = s.db.Set(metaKey(0, metaWritten), EncodeOffset(time.Now().Add(-48*time.Hour).UnixNano()), nil)
	_ = s.db.Set(dbKey(0, InstanceKey("stale")), []byte("x"), nil)
	res, err := r.Restore(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reset == "" || res.From != 0 {
		t.Fatalf("restore of old state %+v, want a reset from 0", res)
	}
	if got := dump(t, s, 0); got != "a=2 b=1" {
		t.Fatalf("restored %q", got)
	}
	// Nothing new since: old is fine, no reset.
	_ = s.db.Set(metaKey(0, metaWritten), EncodeOffset(time.Now().Add(-48*time.Hour).UnixNano()), nil)
	if res, err := r.Restore(context.Background(), 0); err != nil || res.Reset != "" {
		t.Fatalf("restore with nothing new: %+v %v", res, err)
	}
}

// TestRestoreLogsAWholeRate: records_per_s is a whole number, not
// 459.26266664805127.
func TestRestoreLogsAWholeRate(t *testing.T) {
	e := newChangelogEnv(t)
	e.write(0, true, "a=1", "b=1", "c=1")
	s := openTest(t, t.TempDir())
	defer s.Close()
	var buf bytes.Buffer
	r := Restorer{Kafka: e.kcfg, Store: s, Topic: e.topic, Logger: zerolog.New(&buf)}
	if _, err := r.Restore(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var l struct {
			Msg  string          `json:"message"`
			Rate json.RawMessage `json:"records_per_s"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if l.Msg != "restore done" {
			continue
		}
		found = true
		if _, err := strconv.ParseInt(string(l.Rate), 10, 64); err != nil {
			t.Errorf("restore done: records_per_s %s, want a whole number", l.Rate)
		}
	}
	if !found {
		t.Fatalf("no restore done line:\n%s", buf.String())
	}
}
