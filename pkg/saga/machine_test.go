package saga

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/topology"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata files (check the diff by hand!)")

// Each testdata/*.txt file is a scenario of the example order saga: input
// lines ("event AT TYPE [cause=TYPE2] [time=T]" or "timer AT NAME", AT a
// duration since the start, when the coordinator reads it), then "----",
// then the expected transcript: the actions of each input and the final
// instance. An event's ce_id is "id-TYPE", and cause=TYPE2 sets its
// ce_causationid to the ce_id of TYPE2's event (as a troupe step does, which
// emits TYPE caused by TYPE2); without it the event has no cause. Its
// ce_time is AT, or T (also since the start) with time=. Its ce_source is
// the step that emits it (orders.payment), or "client" for a type no step
// emits, or S with source=S. Reading the files alone should explain the coordinator's
// behaviour.
func TestMachineScenarios(t *testing.T) {
	topo, err := topology.Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(data), "----\n")
			if !ok {
				t.Fatal("no ---- separator")
			}
			got := runScenario(t, NewMachine(topo), topo, in)
			if *rewrite {
				if err := os.WriteFile(f, []byte(in+"----\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("transcript differs\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

func runScenario(t *testing.T, m *Machine, topo *topology.Topology, in string) string {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var inst *Instance
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(in))
	offset := int64(0)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("bad line %q: want 'event AT TYPE [cause=TYPE2]' or 'timer AT NAME'", line)
		}
		cause, evTime, source, timer := "", time.Time{}, "", ""
		for _, kv := range f[3:] {
			k, v, _ := strings.Cut(kv, "=")
			switch {
			case f[0] != "event":
				t.Fatalf("bad line %q: a timer takes no %q", line, kv)
			case k == "cause":
				cause = "id-" + v
			case k == "source":
				source = v
			case k == "timer":
				timer = v
			case k == "time":
				d, err := time.ParseDuration(v)
				if err != nil {
					t.Fatalf("bad time in %q: %v", line, err)
				}
				evTime = t0.Add(d)
			default:
				t.Fatalf("bad line %q: unknown %q", line, kv)
			}
		}
		d, err := time.ParseDuration(f[1])
		if err != nil {
			t.Fatalf("bad time in %q: %v", line, err)
		}
		at := t0.Add(d)
		var acts []Action
		switch f[0] {
		case "event":
			full := topo.FullName(f[2])
			topic, _ := topo.TopicOf(full)
			if evTime.IsZero() {
				evTime = at
			}
			if source == "" {
				source = sourceOf(topo, full)
			}
			inst, acts = m.OnEvent("order-1", inst, Event{Type: full, Time: evTime, Now: at, Topic: topic, Offset: offset,
				Source: source, ID: "id-" + f[2], CausationID: cause, Timer: timer})
			offset++
		case "timer":
			acts = m.OnTimer(inst, f[2], at)
			if slices.Contains(acts, Action(Forget{})) {
				inst = nil // as the coordinator deletes it
			}
		default:
			t.Fatalf("bad line %q", line)
		}
		fmt.Fprintf(&out, "%s %s:", f[1], f[2])
		if len(acts) == 0 {
			out.WriteString(" -")
		}
		for _, a := range acts {
			switch a := a.(type) {
			case Compensate:
				fmt.Fprintf(&out, " compensate(%s %s #%d)", a.Step, topo.ShortName(a.Command), a.Attempt)
			case SetTimer:
				fmt.Fprintf(&out, " set-timer(%s +%s)", a.Name, a.At.Sub(t0))
			case CancelTimer:
				fmt.Fprintf(&out, " cancel-timer(%s)", a.Name)
			case End:
				fmt.Fprintf(&out, " end(%s %s)", a.Status, a.Reason)
			case Orphaned:
				fmt.Fprintf(&out, " orphan(%s)", topo.ShortName(a.Type))
			case Forget:
				out.WriteString(" forget")
			}
		}
		out.WriteString("\n")
	}
	if inst == nil {
		return out.String() + "no instance\n"
	}
	orphans := func() {
		if len(inst.Orphans) == 0 {
			return
		}
		out.WriteString("orphans:\n")
		for _, o := range inst.Orphans {
			fmt.Fprintf(&out, "  +%s %s %s/%d@%d source=%s", o.Time.Sub(t0), o.Type, o.Topic, o.Partition, o.Offset, o.Source)
			if o.CausationID != "" {
				fmt.Fprintf(&out, " cause=%s", strings.TrimPrefix(o.CausationID, "id-"))
			}
			out.WriteString("\n")
		}
	}
	if !inst.Started() {
		out.WriteString("no saga\n")
		orphans()
		return out.String()
	}
	fmt.Fprintf(&out, "status=%s reason=%q completed=%v compensated=%v", inst.Status, inst.Reason, inst.Completed, inst.Compensated)
	if inst.Error != "" {
		fmt.Fprintf(&out, " error=%q", inst.Error)
	}
	out.WriteString("\nhistory:\n")
	for _, e := range inst.History {
		fmt.Fprintf(&out, "  +%s %s step=%s", e.Time.Sub(t0), e.Type, e.Step)
		if e.Note != "" {
			fmt.Fprintf(&out, " (%s)", e.Note)
		}
		out.WriteString("\n")
	}
	orphans()
	return out.String()
}

// sourceOf is the ce_source of an event of type typ as the saga's step
// that emits it writes it (<app>.<step>), or "client" for one no step
// emits (the trigger, a command).
func sourceOf(topo *topology.Topology, typ string) string {
	for _, s := range topo.Steps {
		if typ != topo.Trigger && slices.Contains(s.Emits, typ) {
			return topo.Group(s.Name)
		}
		if s.Compensation.Ack == typ {
			return topo.Group(s.Name)
		}
	}
	return "client"
}

func TestStarts(t *testing.T) {
	topo, err := topology.Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMachine(topo)
	for typ, want := range map[string]bool{
		"OrderPlaced": true, "PaymentAuthorized": false, "OutOfStock": false, "ShipmentScheduled": false,
		"RefundPayment": false, "PaymentRefunded": false, "InventoryReleased": false, "Unknown": false,
	} {
		if got := m.Starts(topo.FullName(typ)); got != want {
			t.Errorf("Starts(%s) = %v, want %v", typ, got, want)
		}
	}
}
