package steptest_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/step/steptest"
)

// A handler that fails for one instance until it is fixed: its event goes to
// the dead letters, the instance's later event is parked, and a replay after
// the fix runs both, in order.
func TestDriverDeadLetterReplay(t *testing.T) {
	serde := avro.NewSerde(steptest.NewRegistry())
	if err := serde.Register(Hit{}, `{"type":"record","name":"Hit","fields":[{"name":"n","type":"long"}]}`); err != nil {
		t.Fatal(err)
	}
	if err := serde.Register(Total{}, `{"type":"record","name":"Total","fields":[{"name":"sum","type":"long"}]}`); err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	broken.Store(true)
	s := step.New[sum]("t", "sum", step.Inputs("hits"))
	step.Handle(s, func(c *step.Context[sum], h Hit) error {
		if c.Key() == "b" && broken.Load() {
			return errors.New("b is broken")
		}
		st, _ := c.State()
		st.Sum += h.N
		c.SetState(st)
		return c.Emit("totals", Total{Sum: st.Sum})
	})
	d, err := steptest.Start(s, serde, steptest.Topics("totals"), steptest.Retry(step.RetryPolicy{Attempts: 2}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	for _, e := range []struct {
		key string
		n   int64
	}{{"b", 1}, {"a", 10}, {"b", 2}, {"a", 20}} {
		if _, err := d.Send("hits", e.key, Hit{N: e.n}); err != nil {
			t.Fatal(err)
		}
	}
	dl, err := d.NextDeadLetter()
	if err != nil {
		t.Fatal(err)
	}
	if string(dl.Record.Key) != "b" || dl.Attempts != 2 || dl.Error != "b is broken" || dl.Source.Topic != "hits" {
		t.Fatalf("dead letter %+v", dl)
	}
	for _, want := range []int64{10, 30} { // a flows; b's second hit is parked
		if out, err := d.Next("totals"); err != nil || out.Key != "a" || out.Value.(Total).Sum != want {
			t.Fatalf("output %+v %v, want a's sum %d", out, err, want)
		}
	}

	broken.Store(false)
	if err := d.Replay(dl); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{1, 3} {
		if out, err := d.Next("totals"); err != nil || out.Key != "b" || out.Value.(Total).Sum != want {
			t.Fatalf("output %+v %v, want b's sum %d", out, err, want)
		}
	}
}
