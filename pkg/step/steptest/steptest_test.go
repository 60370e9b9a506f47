package steptest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/step/steptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*shard).releaseLoop"))
}

type Hit struct {
	N int64 `avro:"n"`
}

type Total struct {
	Sum int64 `avro:"sum"`
}

type sum struct{ Sum int64 }

func TestDriverSendNextStateRestart(t *testing.T) {
	for _, g := range []step.Guarantee{step.ExactlyOnce, step.AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			serde := avro.NewSerde(steptest.NewRegistry())
			if err := serde.Register(Hit{}, `{"type":"record","name":"Hit","fields":[{"name":"n","type":"long"}]}`); err != nil {
				t.Fatal(err)
			}
			if err := serde.Register(Total{}, `{"type":"record","name":"Total","fields":[{"name":"sum","type":"long"}]}`); err != nil {
				t.Fatal(err)
			}
			s := step.New[sum]("t", "sum", step.Inputs("hits"))
			step.Handle(s, func(c *step.Context[sum], h Hit) error {
				st, _ := c.State()
				st.Sum += h.N
				c.SetState(st)
				return c.Emit("totals", Total{Sum: st.Sum})
			})
			d, err := steptest.Start(s, serde, steptest.Topics("totals"), steptest.Partitions(2), steptest.Guarantee(g))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := d.Close(); err != nil {
					t.Error(err)
				}
			}()
			in, err := d.Send("hits", "a", Hit{N: 2})
			if err != nil {
				t.Fatal(err)
			}
			out, err := d.Next("totals")
			if err != nil {
				t.Fatal(err)
			}
			if out.Key != "a" || out.Value.(Total).Sum != 2 || out.Meta.CausationID != in.ID {
				t.Fatalf("output %+v, want sum 2 for a caused by %s", out, in.ID)
			}
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Send("hits", "a", Hit{N: 3}); err != nil {
				t.Fatal(err)
			}
			if out, err = d.Next("totals"); err != nil || out.Value.(Total).Sum != 5 {
				t.Fatalf("after restart: %+v %v, want sum 5", out, err)
			}
			st, ok, err := steptest.State[sum](d, "a")
			if err != nil || !ok || st.Sum != 5 {
				t.Fatalf("state of a: %+v %v %v", st, ok, err)
			}
			if _, ok, err := steptest.State[sum](d, "nobody"); ok || err != nil {
				t.Fatalf("state of an unknown instance: %v %v", ok, err)
			}
		})
	}
}
