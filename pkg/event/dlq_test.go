package event_test

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
)

// A dead letter of an event without ce_id reports no id, and its discard
// marker names none: the step matches such a marker by key, as it compares
// ce_id headers (not the id FromRecord derives for the dedupe set).
func TestDeadLetterOfEventWithoutID(t *testing.T) {
	in := &kgo.Record{Topic: "orders", Partition: 3, Offset: 17, Key: []byte("o-1"), Value: []byte{0, 0, 0, 0, 1}}
	dl := dlq.NewDeadLetter(in, "payment", errors.New("boom"), 5, time.Now())
	dl.Topic, dl.Partition, dl.Offset = "orders.payment.dlq", 3, 2
	d, err := dlq.Parse(dl)
	if err != nil {
		t.Fatal(err)
	}
	if d.Event.ID != "" || d.Event.IDDerived {
		t.Fatalf("dead letter of an event without ce_id: Event %+v", d.Event)
	}
	if v, ok := event.Header(dlq.Discard(d, "orders.payment.retry"), dlq.HeaderDiscardEventID); ok {
		t.Fatalf("discard marker names event id %q", v)
	}
	// Two replays of the dead letter are one event to the dedupe set: the
	// id derives from the dead letter's place, not the replay's.
	var ids []string
	for _, off := range []int64{40, 41} {
		replayed := dlq.Replay(d, "orders.payment.retry")
		replayed.Topic, replayed.Offset = "orders.payment.retry", off
		m, _ := event.FromRecord(replayed)
		if !m.IDDerived {
			t.Fatalf("replay %d: %+v", off, m)
		}
		ids = append(ids, m.ID)
	}
	if ids[0] != "orders.payment.dlq/3@2" || ids[1] != ids[0] {
		t.Fatalf("ids of two replays: %q", ids)
	}
}
