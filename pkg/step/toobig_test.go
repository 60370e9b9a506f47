package step

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
)

// An event too large for a record (for the producer, or for its topic's
// max.message.bytes), or a state too large for its changelog record, fails
// its input for good: the input is dead-lettered, naming the
// size and the limit, and every other input goes on. Before, the producer
// refused the record and every transaction (exactly-once) aborted again,
// or the process exited (at-least-once), on every partition.
func TestTooLargeOutputsDeadLetterTheirInput(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const n, instances = 40, 4
			e := newEnv(t, 2)
			big := strings.Repeat("x", dlq.MaxBytes)
			s := New[counter](e.app, "count", Inputs("ticks"))
			Handle(s, func(c *Context[counter], ev Tick) error {
				switch c.Key() {
				case "big-event":
					return c.Emit("counted", Other{X: big}) // the step's outputs can be any type
				case "big-event-error-ignored":
					c.SetState(counter{Count: int64(len(big))})
					c.Emit("counted", Other{X: big}) // the call fails all the same
					return nil
				case "over-the-topic-limit":
					return c.Emit("small-topic", Other{X: strings.Repeat("y", 30_000)})
				case "big-state":
					var st struct{ Blob string }
					st.Blob = big
					c.c.inst.State = nil
					(&Context[struct{ Blob string }]{c: c.c}).SetState(st)
					return nil
				}
				st, _ := c.State()
				st.Count++
				c.SetState(st)
				return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
			})
			e.produce(0, n/2, instances)
			e.createTopic("small-topic")
			if _, err := kadm.NewClient(e.cl).AlterTopicConfigs(t.Context(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("20000")}}, "small-topic"); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"big-event", "big-event-error-ignored", "big-state", "over-the-topic-limit"} {
				if err := e.cl.ProduceSync(t.Context(), e.tick("ticks", key, 1, event.NewID())).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			e.produce(n/2, n/2, instances)
			dir := t.TempDir()
			cfg := e.config(dir, g)
			cfg.Retry = RetryPolicy{Attempts: 3, InitialBackoff: time.Millisecond}
			r := start(t, s, cfg)
			outs := e.counted(n, 30*time.Second)
			dls := e.consume(e.app+".count.dlq", 4, 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatalf("the step stopped: %v", err)
			}
			checkOutputs(t, e, outs, wantCounts(n, instances), true)
			if len(dls) != 4 {
				t.Fatalf("%d dead letters, want 4", len(dls))
			}
			for _, dl := range dls {
				msg := headerValue(dl, dlq.HeaderError)
				if !strings.Contains(msg, " bytes") || !strings.Contains(msg, ", over the ") || !strings.Contains(msg, " may take") {
					t.Errorf("dead letter's error does not name the size and the limit: %q", msg)
				}
				if string(dl.Key) == "over-the-topic-limit" && !strings.Contains(msg, "the topic's max.message.bytes is 20000") {
					t.Errorf("dead letter's error does not name the topic's limit: %q", msg)
				}
				if got := dlq.RecordSize(dl); got > dlq.MaxBytes {
					t.Errorf("dead letter of %d bytes", got)
				}
			}
			if a := counterValue(t, r.rt.m.aborts); a > 0 {
				t.Errorf("%v transactions aborted", a)
			}
		})
	}
}
