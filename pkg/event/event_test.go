package event

import (
	"cmp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestHeadersRoundTrip(t *testing.T) {
	parent := New("troupe.example.orders.OrderPlaced", "troupe-cli", "order-1")
	parent.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	child := CausedBy(parent, "troupe.example.orders.PaymentAuthorized", "orders.payment")

	got, err := FromRecord(&kgo.Record{Key: []byte("order-1"), Headers: child.Headers()})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(child.Time) {
		t.Errorf("time: got %v, want %v", got.Time, child.Time)
	}
	got.Time = child.Time
	if got != child {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, child)
	}
	if got.CausationID != parent.ID || got.CorrelationID != "order-1" || got.TraceParent != parent.TraceParent {
		t.Errorf("causation not kept: %+v", got)
	}
	if v, _ := Header(&kgo.Record{Headers: child.Headers()}, HeaderSpecVersion); v != SpecVersion {
		t.Errorf("specversion = %q", v)
	}
}

func TestNewIDIsUUIDv7(t *testing.T) {
	a, b := NewID(), NewID()
	if a == b {
		t.Fatal("two ids are equal")
	}
	u, err := uuid.Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if u.Version() != 7 {
		t.Fatalf("version %d, want 7", u.Version())
	}
}

func TestParseTime(t *testing.T) {
	ms := time.Date(2026, 1, 2, 3, 4, 5, 123_000_000, time.UTC)
	us := time.Date(2026, 1, 2, 3, 4, 5, 123_456_000, time.UTC)
	sec := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time // zero: an error
	}{
		{"2026-01-02T03:04:05Z", sec},
		{"2026-01-02T03:04:05.123Z", ms},
		{"2026-01-02T03:04:05.123456789Z", time.Date(2026, 1, 2, 3, 4, 5, 123_456_789, time.UTC)},
		{"2026-01-02T04:04:05.123+01:00", ms},
		{"2026-01-01T22:04:05-05:00", sec},
		{"2026-01-02t03:04:05z", sec},
		// Python: datetime.utcnow().isoformat(), str(datetime.utcnow()),
		// datetime.now(timezone.utc).isoformat(), and Java's +0000.
		{"2026-01-02T03:04:05.123456", us},
		{"2026-01-02T03:04:05", sec},
		{"2026-01-02 03:04:05.123456", us},
		{"2026-01-02 03:04:05.123456+00:00", us},
		{"2026-01-02T03:04:05.123+0000", ms},
		{" 2026-01-02T03:04:05Z\n", sec},
		// Epoch milliseconds.
		{"1767323045123", ms},
		{"0", time.Unix(0, 0).UTC()},
		{"-1000", time.Unix(-1, 0).UTC()},
		// Not times.
		{"yesterday", time.Time{}},
		{"", time.Time{}},
		{"-", time.Time{}},
		{"2026-01-02", time.Time{}},
		{"2026-13-02T03:04:05Z", time.Time{}},
		{"2026-01-02T03:04:05+25:00", time.Time{}},
		{"0000-01-01T00:00:00+01:00", time.Time{}}, // UTC is year -1: RFC 3339 cannot write it
		{"99999999999999999", time.Time{}},
		{"1e12", time.Time{}},
	} {
		got, err := ParseTime(tc.in)
		if tc.want.IsZero() {
			if err == nil {
				t.Errorf("ParseTime(%q) = %v, want an error", tc.in, got)
			} else if !strings.Contains(err.Error(), tc.in) && tc.in != "" {
				t.Errorf("ParseTime(%q): error %q does not name the value", tc.in, err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("ParseTime(%q) = %v, %v; want %v in UTC", tc.in, got, err, tc.want)
		}
	}
}

func TestFromRecord(t *testing.T) {
	h := func(kv ...string) []kgo.RecordHeader {
		var out []kgo.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			out = append(out, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return out
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		rec     *kgo.Record
		want    Metadata
		wantErr string
	}{{
		name: "no headers at all: id from the place, saga from the key, no type",
		rec:  &kgo.Record{Topic: "orders", Partition: 3, Offset: 17, Key: []byte("o-1")},
		want: Metadata{ID: "orders/3@17", IDDerived: true, SagaID: "o-1"},
	}, {
		name: "every header",
		rec: &kgo.Record{Topic: "orders", Key: []byte("o-1"), Headers: h(
			HeaderSpecVersion, "1.0", HeaderID, "id-1", HeaderSource, "python", HeaderType, "a.B",
			HeaderTime, "2026-01-02T03:04:05Z", HeaderSagaID, "s-1", HeaderCausationID, "c-1",
			HeaderCorrelationID, "r-1", HeaderTraceParent, "00-x-y-01", HeaderContentType, ContentTypeAvro)},
		want: Metadata{ID: "id-1", Source: "python", Type: "a.B", Time: at, SagaID: "s-1", CausationID: "c-1", CorrelationID: "r-1", TraceParent: "00-x-y-01"},
	}, {
		name: "zone-less time is UTC",
		rec:  &kgo.Record{Topic: "orders", Headers: h(HeaderID, "id-1", HeaderTime, "2026-01-02T03:04:05")},
		want: Metadata{ID: "id-1", Time: at},
	}, {
		name: "epoch milliseconds",
		rec:  &kgo.Record{Topic: "orders", Headers: h(HeaderID, "id-1", HeaderTime, "1767323045000")},
		want: Metadata{ID: "id-1", Time: at},
	}, {
		name: "empty ce_id and ce_time count as missing",
		rec:  &kgo.Record{Topic: "payments", Partition: 1, Offset: 2, Headers: h(HeaderID, "", HeaderTime, "")},
		want: Metadata{ID: "payments/1@2", IDDerived: true},
	}, {
		name: "the first of two headers counts, as for Header",
		rec:  &kgo.Record{Headers: h(HeaderID, "first", HeaderID, "second", HeaderTime, "2026-01-02T03:04:05Z", HeaderTime, "junk")},
		want: Metadata{ID: "first", Time: at},
	}, {
		name: "a dead letter without ce_id: the failed record's place",
		rec: &kgo.Record{Topic: "orders.payment.retry", Partition: 3, Offset: 900, Key: []byte("o-1"),
			Headers: h(dlqTopic, "orders", dlqPartition, "3", dlqOffset, "17")},
		want: Metadata{ID: "orders/3@17", IDDerived: true, SagaID: "o-1"},
	}, {
		name: "a replay without ce_id: the id of the dead letter it was replayed from",
		rec: &kgo.Record{Topic: "orders.payment.retry", Partition: 3, Offset: 900, Key: []byte("o-1"),
			Headers: h(replayedTopic, "orders.payment.dlq", replayedPartition, "3", replayedOffset, "4", dlqTopic, "orders", dlqPartition, "3", dlqOffset, "17")},
		want: Metadata{ID: "orders.payment.dlq/3@4", IDDerived: true, SagaID: "o-1"},
	}, {
		name: "malformed provenance: the record's own place",
		rec:  &kgo.Record{Topic: "orders.payment.retry", Offset: 5, Headers: h(dlqTopic, "orders", dlqPartition, "x", dlqOffset, "17")},
		want: Metadata{ID: "orders.payment.retry/0@5", IDDerived: true},
	}, {
		name:    "a ce_time that is no time",
		rec:     &kgo.Record{Headers: h(HeaderTime, "yesterday")},
		wantErr: `header ce_time: "yesterday" is not a time`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromRecord(tc.rec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Time.Equal(tc.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tc.want.Time)
			}
			got.Time = tc.want.Time
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestHeadersWriteExactRFC3339(t *testing.T) {
	zone := time.FixedZone("CET", 3600)
	m := Metadata{ID: "x", Time: time.Date(2026, 1, 2, 4, 4, 5, 120_000_000, zone)}
	v, _ := Header(&kgo.Record{Headers: m.Headers()}, HeaderTime)
	if v != "2026-01-02T03:04:05.12Z" {
		t.Fatalf("ce_time = %q, want RFC 3339 in UTC", v)
	}
	// A derived id is written as ce_id: a copy of the record keeps it.
	d, _ := FromRecord(&kgo.Record{Topic: "orders", Partition: 1, Offset: 9})
	cp, _ := FromRecord(&kgo.Record{Topic: "elsewhere", Offset: 1, Headers: d.Headers()})
	if cp.ID != "orders/1@9" || cp.IDDerived {
		t.Fatalf("copy of a record with a derived id: %+v", cp)
	}
}

// FuzzFromRecord feeds FromRecord arbitrary header values and places, and
// checks what holds for every record: it does not panic; only ce_time can
// make it fail; the id is never empty and is derived exactly when ce_id is
// missing, deterministically; the saga id falls back to the key; and what
// Headers writes of the result reads back the same, with ce_time as exact
// RFC 3339.
func FuzzFromRecord(f *testing.F) {
	f.Add("orders", int32(0), int64(0), "k", "", "", "", "")
	f.Add("orders", int32(3), int64(17), "o-1", "id-1", "a.B", "2026-01-02T03:04:05.123456", "s")
	f.Add("t", int32(-1), int64(-1), "", "", "", "1767323045123", "")
	f.Add("t", int32(1), int64(2), "k", "id", "", "2026-01-02 03:04:05+01:00", "")
	f.Add("t", int32(1), int64(2), "k", "id", "", "0000-01-01T00:30:00+01:00", "")
	f.Add("t", int32(1), int64(2), "k", "id", "", "9999-12-31T23:59:59.999999999-01:00", "")
	f.Fuzz(func(t *testing.T, topic string, partition int32, offset int64, key, id, typ, ts, saga string) {
		var hs []kgo.RecordHeader
		add := func(k, v string) {
			if v != "" {
				hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
		}
		add(HeaderID, id)
		add(HeaderType, typ)
		add(HeaderTime, ts)
		add(HeaderSagaID, saga)
		r := &kgo.Record{Topic: topic, Partition: partition, Offset: offset, Key: []byte(key), Headers: hs}
		m, err := FromRecord(r)
		if err != nil {
			if strings.TrimSpace(ts) == "" {
				t.Fatalf("error without a ce_time: %v", err)
			}
			if _, perr := ParseTime(ts); perr == nil {
				t.Fatalf("FromRecord failed (%v) on a ce_time ParseTime accepts", err)
			}
			return
		}
		if m.ID == "" {
			t.Fatal("empty id")
		}
		if m.IDDerived != (id == "") || (m.IDDerived && m.ID != DerivedID(topic, partition, offset)) || (!m.IDDerived && m.ID != id) {
			t.Fatalf("id %q (derived %v) for ce_id %q at %s/%d@%d", m.ID, m.IDDerived, id, topic, partition, offset)
		}
		if again, _ := FromRecord(r); again != m {
			t.Fatalf("not deterministic: %+v then %+v", m, again)
		}
		if want := cmp.Or(saga, key); m.SagaID != want || m.Type != typ {
			t.Fatalf("saga %q type %q, want %q %q", m.SagaID, m.Type, want, typ)
		}
		if !m.Time.IsZero() && m.Time.Location() != time.UTC {
			t.Fatalf("time %v is not UTC", m.Time)
		}
		back, err := FromRecord(&kgo.Record{Topic: "other", Key: []byte(key), Headers: m.Headers()})
		if err != nil {
			t.Fatalf("reading back what Headers wrote (%v): %v", m.Headers(), err)
		}
		if v, ok := Header(&kgo.Record{Headers: m.Headers()}, HeaderTime); ok {
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				t.Fatalf("ce_time written as %q, not RFC 3339", v)
			}
		}
		want := m
		want.IDDerived = false
		if !back.Time.Equal(want.Time) {
			t.Fatalf("time read back %v, want %v", back.Time, want.Time)
		}
		back.Time = want.Time
		if back != want {
			t.Fatalf("read back\n %+v\nwant\n %+v", back, want)
		}
	})
}
