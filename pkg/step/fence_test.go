package step

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type pingState struct {
	N int64 `json:"n"`
}

// pingStep sets timer "ping" on a tick; each time it fires, the instance
// counts it and emits Counted{Count: that count, N: owner}, and sets it
// again: like the coordinator re-sending a command until it is acked, it
// is work done on timers alone, with no input record.
func pingStep(app string, owner int64, every time.Duration) *Step[pingState] {
	s := New[pingState](app, "count", Inputs("ticks"))
	Handle(s, func(c *Context[pingState], ev Tick) error {
		c.SetTimer("ping", time.Now().Add(every))
		return nil
	})
	OnTimer(s, func(c *Context[pingState], name string) error {
		st, _ := c.State()
		st.N++
		c.SetState(st)
		c.SetTimer("ping", time.Now().Add(every))
		return c.Emit("counted", Counted{Count: st.N, N: owner})
	})
	return s
}

// A member the group has dropped without knowing it (a process paused past
// its session timeout, or cut off from the group coordinator alone) keeps
// firing the timers of partitions another member now owns. Its transactions
// poll nothing, so they carry no offsets; unless they commit the offsets
// anyway, under its stale generation, nothing fences them, and the two
// owners interleave: each count emitted twice, an old owner's state written
// over the new one's. The zombie here is made by answering its heartbeats
// on the group's behalf: it never learns that it was dropped.
func TestZombieTimersFenced(t *testing.T) {
	for _, proto := range []GroupProtocol{GroupProtocolClassic, GroupProtocolConsumer} {
		t.Run(string(proto), func(t *testing.T) {
			const instances, every = 4, 50 * time.Millisecond
			e := newEnv(t, 2, kfake.GroupMinSessionTimeout(time.Second), kfake.BrokerConfigs(map[string]string{
				"group.consumer.session.timeout.ms":    "2000",
				"group.consumer.heartbeat.interval.ms": "250",
			}))
			config := func() Config {
				cfg := e.config(t.TempDir(), ExactlyOnce)
				cfg.GroupProtocol = proto
				cfg.SessionTimeout = 2 * time.Second
				return cfg
			}
			a := start(t, pingStep(e.app, 1, every), config())
			a.waitActive(t, 2, 10*time.Second)
			e.produce(0, instances, instances)
			e.awaitCounts(instances, 3, 1, 20*time.Second)

			zombie, _ := a.rt.cl.GroupMetadata()
			e.c.ControlKey(int16(kmsg.Heartbeat), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				e.c.KeepControl()
				req := kreq.(*kmsg.HeartbeatRequest)
				if req.MemberID != zombie {
					return nil, nil, false
				}
				return req.ResponseKind(), nil, true
			})
			e.c.ControlKey(int16(kmsg.ConsumerGroupHeartbeat), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				e.c.KeepControl()
				req := kreq.(*kmsg.ConsumerGroupHeartbeatRequest)
				if req.MemberID != zombie || req.MemberEpoch < 0 {
					return nil, nil, false
				}
				resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
				resp.MemberID = &req.MemberID
				resp.MemberEpoch = req.MemberEpoch
				resp.HeartbeatIntervalMillis = 250
				return resp, nil, true
			})

			b := start(t, pingStep(e.app, 2, every), config())
			b.waitActive(t, 2, 30*time.Second)
			e.awaitCounts(instances, 5, 2, 30*time.Second)
			// The zombie goes on firing its timers: each of its
			// transactions since must have been refused.
			aborted := counterValue(t, a.rt.m.aborts)
			for deadline := time.Now().Add(10 * time.Second); counterValue(t, a.rt.m.aborts) < aborted+3; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the zombie aborted %v transactions in 10 s after the new owner's, want 3 or more", counterValue(t, a.rt.m.aborts)-aborted)
				}
			}
			if len(a.rt.activeTasks()) != 2 {
				t.Fatalf("the zombie holds %d partitions, want 2: it learnt it was dropped, and the test proves nothing", len(a.rt.activeTasks()))
			}
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
			if err := b.stop(); err != nil {
				t.Fatal(err)
			}

			byKey := map[string][]*counted{}
			for _, r := range e.readToEnd("counted") {
				_, v, err := e.codec.Decode(t.Context(), r.Value)
				if err != nil {
					t.Fatal(err)
				}
				byKey[string(r.Key)] = append(byKey[string(r.Key)], &counted{Counted: v.(Counted), key: string(r.Key)})
			}
			for key, outs := range byKey {
				var seq []string
				for _, o := range outs {
					seq = append(seq, fmt.Sprintf("%d@%d", o.Count, o.N))
				}
				took := false
				for i, o := range outs {
					took = took || o.N == 2
					if o.Count != int64(i+1) || took && o.N == 1 {
						t.Fatalf("instance %s: pings (count@owner) %v: the dropped member committed after the new owner took over", key, seq)
					}
				}
			}
		})
	}
}

// awaitCounts waits until each of instances has emitted a Counted of at
// least n from owner.
func (e *env) awaitCounts(instances int, n, owner int64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		best := map[string]int64{}
		for _, o := range e.counted(0, 200*time.Millisecond) {
			if o.N == owner && o.Count > best[o.key] {
				best[o.key] = o.Count
			}
		}
		done := len(best) == instances
		for _, c := range best {
			done = done && c >= n
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %s, counts from owner %d: %v; want %d instances at %d or more", timeout, owner, best, instances, n)
		}
	}
}

// readToEnd reads every committed record of topic: it writes a marker to
// each partition and reads (read_committed) until it has met them all.
func (e *env) readToEnd(topic string) []*kgo.Record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, err := kgo.NewClient(kgo.SeedBrokers(e.kcfg.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer pr.Close()
	for p := range e.nparts {
		if err := pr.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Key: []byte("end-marker")}).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
	}
	cl := e.reader(topic)
	defer cl.Close()
	var out []*kgo.Record
	for met := map[int32]bool{}; len(met) < int(e.nparts); {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("read %s: met the end marker of %d of %d partitions in 30 s", topic, len(met), e.nparts)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == "end-marker" {
				met[r.Partition] = true
				return
			}
			out = append(out, r)
		})
	}
	return out
}
