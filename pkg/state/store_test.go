package state

import (
	"bytes"
	"errors"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{App: "orders", Step: "payment"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeysSortAndParse(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	keys := [][]byte{
		TimerKey(t0.Add(time.Hour), "a", "x"),
		TimerKey(t0, "zz", "reply"),
		TimerKey(t0, "a", "reply"),
		TimerKey(t0.Add(-time.Hour), "b", ""),
	}
	slices.SortFunc(keys, bytes.Compare)
	var got []string
	for _, k := range keys {
		at, id, name, err := ParseTimerKey(k)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, at.Sub(t0).String()+" "+id+"/"+name)
	}
	want := []string{"-1h0m0s b/", "0s a/reply", "0s zz/reply", "1h0m0s a/x"}
	if !slices.Equal(got, want) {
		t.Fatalf("timer order %q, want %q", got, want)
	}

	lo, hi := TimersDue(t0)
	var due int
	for _, k := range keys {
		if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
			due++
		}
	}
	if due != 3 {
		t.Fatalf("%d timers due at t0, want 3 (the ones at or before it)", due)
	}
	if _, _, _, err := ParseTimerKey(InstanceKey("x")); !errors.Is(err, ErrBadKey) {
		t.Fatalf("parse of an instance key as a timer: %v, want ErrBadKey", err)
	}
	// A timer before 1970 fires at once rather than wrapping around.
	if _, _, _, err := ParseTimerKey(TimerKey(time.Unix(-5, 0), "a", "b")); err != nil {
		t.Fatal(err)
	}
	if bytes.Compare(TimerKey(time.Unix(-5, 0), "a", "b"), TimerKey(time.Unix(0, 0), "a", "b")) != 0 {
		t.Fatal("a timer before 1970 should clamp to 1970")
	}
}

func TestInstanceRecord(t *testing.T) {
	tests := []struct {
		name string
		in   Instance
	}{
		{"empty", Instance{}},
		{"state only", Instance{State: []byte(`{"n":1}`)}},
		{"empty state is state", Instance{State: []byte{}}},
		{"all", Instance{State: []byte("x"), Ended: true, Seen: []uint64{1, 2, 3}}},
		{"applied", Instance{State: []byte("x"), Applied: []AppliedOffset{{TopicHash("orders"), 0}, {TopicHash("orders.retry"), 1 << 40}}}},
		{"applied without state", Instance{Completed: true, Applied: []AppliedOffset{{7, 12}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeInstance(tt.in.Append(nil))
			if err != nil {
				t.Fatal(err)
			}
			if (got.State == nil) != (tt.in.State == nil) || !bytes.Equal(got.State, tt.in.State) ||
				got.Ended != tt.in.Ended || got.Completed != tt.in.Completed || !slices.Equal(got.Seen, tt.in.Seen) && len(tt.in.Seen) > 0 ||
				!slices.Equal(got.Applied, tt.in.Applied) {
				t.Fatalf("round trip %+v, want %+v", got, tt.in)
			}
		})
	}
	applied := flagHasApplied
	for _, bad := range [][]byte{nil, {2, 0, 0}, {1, 0, 5}, {1, 0, 1, 1, 2},
		{1, byte(applied), 0, 0}, {1, byte(applied), 0, 1, 0, 0, 0}, {1, byte(applied), 0, 1, 0, 0, 0, 0, 0x80}} {
		if _, err := DecodeInstance(bad); !errors.Is(err, ErrBadRecord) {
			t.Errorf("DecodeInstance(%v) = %v, want ErrBadRecord", bad, err)
		}
	}
}

func TestInstanceApplied(t *testing.T) {
	var in Instance
	a, b := TopicHash("orders"), TopicHash("orders.retry")
	if _, ok := in.AppliedAt(a); ok {
		t.Fatal("a new instance has an applied offset")
	}
	in.SetApplied(a, 5)
	in.SetApplied(b, 2)
	in.SetApplied(a, 9)
	if off, ok := in.AppliedAt(a); !ok || off != 9 {
		t.Errorf("AppliedAt(orders) = %d, %v; want 9", off, ok)
	}
	if off, ok := in.AppliedAt(b); !ok || off != 2 || len(in.Applied) != 2 {
		t.Errorf("AppliedAt(orders.retry) = %d, %v (%d entries); want 2 in 2", off, ok, len(in.Applied))
	}
}

func TestInstanceDedupeWindow(t *testing.T) {
	var in Instance
	for i := range 20 {
		in.Remember(string(rune('a'+i)), 16)
	}
	if len(in.Seen) != 16 {
		t.Fatalf("window holds %d ids, want 16", len(in.Seen))
	}
	if in.HasSeen("a") || in.HasSeen("d") {
		t.Fatal("ids older than the window are still seen")
	}
	if !in.HasSeen("e") || !in.HasSeen("t") {
		t.Fatal("recent ids are not seen")
	}
	if in.HasSeen("") {
		t.Fatal("an event without id must never be a duplicate")
	}
}

func TestTimerRecord(t *testing.T) {
	tm := Timer{EventID: "id", Topic: "inventory", Type: "troupe.X", Value: []byte{0, 0, 0, 0, 1, 2}, SagaID: "o-1", CorrelationID: "o-1", CausationID: "c", TraceParent: "00-x"}
	got, err := DecodeTimer(tm.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.EventID != tm.EventID || got.Topic != tm.Topic || got.Type != tm.Type || !bytes.Equal(got.Value, tm.Value) ||
		got.SagaID != tm.SagaID || got.CorrelationID != tm.CorrelationID || got.CausationID != tm.CausationID || got.TraceParent != tm.TraceParent {
		t.Fatalf("round trip %+v, want %+v", got, tm)
	}
	if _, err := DecodeTimer([]byte{1, 200}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("truncated timer: %v", err)
	}
}

func TestOpenRefusesForeignDirs(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	id := s.InstanceID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	_, err := Open(dir, Options{App: "orders", Step: "shipping"})
	var ie *IdentityError
	if !errors.As(err, &ie) {
		t.Fatalf("open as another step: %v, want *IdentityError", err)
	}
	t.Log(err)

	s = openTest(t, dir)
	if s.InstanceID() != id {
		t.Fatalf("instance id changed across opens: %s then %s", id, s.InstanceID())
	}
	_ = s.Close()

	// Another format.
	b, _ := os.ReadFile(filepath.Join(dir, MarkerFile))
	_ = os.WriteFile(filepath.Join(dir, MarkerFile), bytes.Replace(b, []byte(`"format": 1`), []byte(`"format": 99`), 1), 0o644)
	if _, err := Open(dir, Options{App: "orders", Step: "payment"}); !errors.As(err, &ie) {
		t.Fatalf("open of another format: %v, want *IdentityError", err)
	}

	// A dir with someone's files.
	other := t.TempDir()
	_ = os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644)
	if _, err := Open(other, Options{App: "orders", Step: "payment"}); !errors.As(err, &ie) {
		t.Fatalf("open of a foreign dir: %v, want *IdentityError", err)
	}
	if err := Remove(other); !errors.As(err, &ie) {
		t.Fatalf("remove of a foreign dir: %v, want *IdentityError", err)
	}
	if _, err := os.Stat(filepath.Join(other, "notes.txt")); err != nil {
		t.Fatal("Remove deleted a foreign file")
	}
}

func TestOpenWipesCorruptStore(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	txn := s.NewTxn()
	_ = txn.Set(0, InstanceKey("a"), []byte("1"))
	_ = txn.SetChangelogOffset(0, 10)
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	// Corrupt the manifest.
	ms, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if len(ms) == 0 {
		t.Fatal("no manifest")
	}
	for _, m := range ms {
		if err := os.WriteFile(m, bytes.Repeat([]byte{0xde, 0xad}, 64), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = openTest(t, dir)
	defer s.Close()
	if s.Wiped() == "" {
		t.Fatal("corrupt store opened without a wipe")
	}
	if off, _ := s.ChangelogOffset(0); off != 0 {
		t.Fatalf("changelog offset after wipe %d, want 0 (restore from the start)", off)
	}
}

func TestTxnReadsOwnWritesAndListsChanges(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()

	txn := s.NewTxn()
	_ = txn.Set(1, InstanceKey("a"), []byte("1"))
	_ = txn.Set(1, InstanceKey("a"), []byte("2"))
	_ = txn.Set(1, InstanceKey("b"), []byte("x"))
	_ = txn.Delete(1, InstanceKey("b"))
	_ = txn.Set(2, InstanceKey("a"), []byte("other partition"))
	if v, ok, _ := txn.Get(1, InstanceKey("a")); !ok || string(v) != "2" {
		t.Fatalf("txn get a = %q %v, want 2", v, ok)
	}
	if _, ok, _ := s.Get(1, InstanceKey("a")); ok {
		t.Fatal("store sees a write before commit")
	}
	type change struct{ k, v string }
	var got []change
	_ = txn.Changes(1, func(k, v []byte) error {
		c := change{k: string(k), v: string(v)}
		if v == nil {
			c.v = "<tombstone>"
		}
		got = append(got, c)
		return nil
	})
	want := []change{{"ia", "2"}, {"ib", "<tombstone>"}}
	if !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
	if ps := txn.Partitions(); !slices.Equal(ps, []int32{1, 2}) {
		t.Fatalf("partitions %v", ps)
	}
	_ = txn.SetChangelogOffset(1, 42)
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := s.Get(1, InstanceKey("a")); string(v) != "2" {
		t.Fatalf("after commit a = %q", v)
	}
	if off, _ := s.ChangelogOffset(1); off != 42 {
		t.Fatalf("changelog offset %d, want 42", off)
	}
	if ps, _ := s.Partitions(); !slices.Equal(ps, []int32{1}) {
		t.Fatalf("stored partitions %v", ps)
	}

	discarded := s.NewTxn()
	_ = discarded.Set(1, InstanceKey("a"), []byte("lost"))
	discarded.Discard()
	if v, _, _ := s.Get(1, InstanceKey("a")); string(v) != "2" {
		t.Fatalf("discard leaked: a = %q", v)
	}

	if err := s.WipePartition(1); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(1, InstanceKey("a")); ok {
		t.Fatal("wipe left state")
	}
	if off, _ := s.ChangelogOffset(1); off != 0 {
		t.Fatal("wipe left the offset")
	}
	if v, _, _ := s.Get(2, InstanceKey("a")); string(v) != "other partition" {
		t.Fatal("wipe of partition 1 touched partition 2")
	}
}

func TestTxnScanMergesBatchAndStore(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	t0 := time.Unix(1_700_000_000, 0)
	txn := s.NewTxn()
	_ = txn.Set(0, TimerKey(t0, "a", "1"), []byte("stored"))
	_ = txn.Set(0, TimerKey(t0.Add(time.Hour), "a", "late"), []byte("stored"))
	_ = txn.Commit()

	txn = s.NewTxn()
	defer txn.Discard()
	_ = txn.Set(0, TimerKey(t0.Add(-time.Second), "b", "2"), []byte("new"))
	_ = txn.Delete(0, TimerKey(t0, "a", "1"))
	_ = txn.Set(0, TimerKey(t0.Add(time.Second), "c", "3"), []byte("new"))
	lo, hi := TimersDue(t0.Add(time.Second))
	var got []string
	err := txn.Scan(0, lo, hi, func(k, v []byte) (bool, error) {
		_, id, name, err := ParseTimerKey(k)
		got = append(got, id+"/"+name+"="+string(v))
		return true, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b/2=new", "c/3=new"}; !slices.Equal(got, want) {
		t.Fatalf("due timers %v, want %v", got, want)
	}
}

func TestRemoveRefusesAStoreInUse(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := Remove(dir); err == nil {
		t.Fatal("removed a store that is open")
	}
	_ = s.Close()
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left %d entries", len(entries))
	}
}

func TestTopicHashIsFNV1a(t *testing.T) {
	for _, topic := range []string{"", "orders", "orders.saga.order-fulfillment.retry"} {
		h := fnv.New32a()
		h.Write([]byte(topic))
		if got, want := TopicHash(topic), h.Sum32(); got != want {
			t.Errorf("TopicHash(%q) = %x, want FNV-1a %x", topic, got, want)
		}
	}
}
