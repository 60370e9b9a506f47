package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/troupehq/troupe/integration/runbook"
)

// TestRunbook runs the commands of the README's runbook ("Recovering from
// failures") in the order the README gives them, against a `troupe dev`
// (the built binary, on free ports, in a temporary directory), and checks
// what each prints. The commands are read from the README itself
// (runbook.Commands): a command added, removed or reordered there without
// the same change here fails the test, so the runbook cannot rot.
// integration.TestRunbookRealKafka runs them against a real broker.
func TestRunbook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds troupe and runs troupe dev")
	}
	cmds, err := runbook.Commands("../../README.md", isCommandName)
	if err != nil {
		t.Fatal(err)
	}

	// What each command must do, in the README's order. P and N are the
	// dead letter's partition and offset, which saga get tells.
	type expectation struct {
		cmd  string
		code int
		want []string
		// before runs first (e.g. stop dev); wait repeats the command
		// until it passes (the dead letter takes a few seconds).
		before func()
		wait   bool
	}
	dir := t.TempDir()
	copyDir(t, "../../topology", filepath.Join(dir, "topology"))
	bin := buildTroupe(t, dir)
	d := startDev(t, bin, dir)
	var p, n string
	steps := []expectation{
		{cmd: `./troupe produce --type OrderPlaced --data '{"orderId":"o-err","customerId":"c-1", "amountCents":1200,"currency":"EUR","items":[{"sku":"ERR-CLOCK","quantity":1}], "shipTo":{"name":"Ada","line1":"1 Main St","city":"London","country":"GB"}, "placedAt":"2026-11-23T12:00:00Z"}'`,
			want: []string{"produced troupe.example.orders.OrderPlaced key o-err to orders partition"}},
		{cmd: "troupe saga get o-err", want: []string{`"deadLetters"`, `"step": "inventory"`}, wait: true},
		{cmd: "troupe dlq list --step inventory", want: []string{"o-err", "PaymentAuthorized", "warehouse system unavailable", "1 outstanding"}},
		{cmd: "troupe dlq show --step inventory --partition P --offset N", want: []string{"step: inventory", "ERR-CLOCK", "neither replayed nor discarded yet"}},
		{cmd: "troupe dlq list --coordinator order-fulfillment", want: []string{"orders.saga.order-fulfillment.dlq is empty"}},
		{cmd: "troupe dlq replay --step inventory --partition P --offset N --dry-run", want: []string{"would replay", "dry run: 1 dead letter(s) of step inventory selected"}},
		{cmd: "troupe dlq discard --step inventory --partition P --offset N", want: []string{"discarded ", "discarded 1 dead letter(s) of step inventory into orders.inventory.retry"}},
		{cmd: "troupe dlq discard --step inventory --partition P --offset N", want: []string{"nothing written", "settled already: discarded at"}},
		{cmd: "troupe dlq replay --step inventory --all --dry-run", want: []string{"nothing to replay: the 1 selected dead letter(s) of step inventory are settled already"}},
		{cmd: "troupe replay --topic orders --group orders.payment --from-time -1h --dry-run", code: exitUsage, want: []string{"group orders.payment is Stable", "live member", "stop every consumer of the group"}},
		{cmd: "troupe topics create orders-audit", want: []string{"created topic orders-audit with 8 partitions"}},
		{cmd: "troupe replay --topic orders --from-time -1h --to-topic orders-audit", want: []string{"copied ", "to orders-audit", "kept their partition numbers"}},
		{cmd: "troupe state rebuild --step payment", code: exitFailure, want: []string{"state dir .troupe/state/orders.payment is in use by a running process (stop the step first)"}},
		{cmd: "troupe state rebuild --step payment --dev", want: []string{"rebuilt .troupe/state/orders.payment from orders.payment.changelog: 8 partitions"},
			before: func() {
				// While dev runs, --dev refuses; then dev is stopped as the
				// README says.
				out, code := d.run(t, "state", "rebuild", "--step", "payment", "--dev")
				if code != exitUsage || !strings.Contains(out, "is in use by another troupe dev") {
					t.Errorf("state rebuild --dev while dev runs: exit %d, want 2 and 'in use by another troupe dev':\n%s", code, out)
				}
				d.stop(t)
			}},
	}

	var got []string
	for _, s := range steps {
		got = append(got, s.cmd)
	}
	if d := runbook.Diff(cmds, got); d != "" {
		t.Fatal(d)
	}

	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		args, err := runbook.Words(s.cmd)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range args {
			switch a {
			case "P":
				args[i] = p
			case "N":
				args[i] = n
			}
		}
		check := func() (string, int, string) {
			out, code := d.run(t, args...)
			var miss []string
			for _, w := range s.want {
				if !strings.Contains(out, w) {
					miss = append(miss, w)
				}
			}
			if code != s.code || len(miss) > 0 {
				return out, code, fmt.Sprintf("exit %d (want %d), missing %q", code, s.code, miss)
			}
			return out, code, ""
		}
		out, _, problem := check()
		for deadline := time.Now().Add(60 * time.Second); s.wait && problem != "" && time.Now().Before(deadline); {
			time.Sleep(500 * time.Millisecond)
			out, _, problem = check()
		}
		if problem != "" {
			t.Fatalf("runbook: %s: %s\n%s\n--- troupe dev (last lines):\n%s", s.cmd, problem, out, tail(d.log.String(), 30))
		}
		t.Logf("$ %s\n%s", s.cmd, out)
		if s.cmd == "troupe dlq list --step inventory" {
			// The UI's dead-letter card reads the same, the coordinator's
			// DLQ included.
			var dl struct {
				Steps []struct {
					Step        string `json:"step"`
					Outstanding int    `json:"outstanding"`
				} `json:"steps"`
			}
			resp, err := http.Get(d.http + "/api/deadletters")
			if err != nil {
				t.Fatal(err)
			}
			err = json.NewDecoder(resp.Body).Decode(&dl)
			resp.Body.Close()
			if err != nil || fmt.Sprint(dl.Steps) != "[{payment 0} {inventory 1} {shipping 0} {saga.order-fulfillment 0}]" {
				t.Errorf("GET /api/deadletters: %v, %v; want inventory 1 outstanding and the coordinator listed", err, dl.Steps)
			}
		}
		if strings.HasPrefix(s.cmd, "troupe saga get") {
			var inst struct {
				DeadLetters []struct {
					Step      string `json:"step"`
					Partition int32  `json:"partition"`
					Offset    int64  `json:"offset"`
				} `json:"deadLetters"`
			}
			if err := json.Unmarshal([]byte(out), &inst); err != nil || len(inst.DeadLetters) != 1 {
				t.Fatalf("saga get o-err: %v, %d dead letters:\n%s", err, len(inst.DeadLetters), out)
			}
			p, n = strconv.Itoa(int(inst.DeadLetters[0].Partition)), strconv.FormatInt(inst.DeadLetters[0].Offset, 10)
		}
	}

	// make run again: the rebuilt store is taken, and the stack is ready.
	d = startDev(t, bin, dir)
	if out, code := d.run(t, "saga", "get", "o-err"); code != exitOK || !strings.Contains(out, `"id": "o-err"`) {
		t.Errorf("saga get o-err after restarting dev: exit %d\n%s", code, out)
	}
}

// isCommandName reports whether c names a command without running it
// ("troupe dev", "troupe dlq show"): nothing follows the command's path.
func isCommandName(c string) bool {
	words := strings.Fields(c)[1:]
	cmd, rest, err := newRootCmd().Find(words)
	return err == nil && len(rest) == 0 && cmd.Name() == words[len(words)-1]
}

func buildTroupe(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "troupe")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/troupe: %v\n%s", err, out)
	}
	return bin
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// devProc is a troupe dev under test, on free ports, and the environment
// (its banner's export line) that points the CLI at it.
type devProc struct {
	bin, dir string
	env      []string
	http     string
	cmd      *exec.Cmd
	log      *syncBuffer
	done     chan error
}

// syncBuffer is a bytes.Buffer that the process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startDev(t *testing.T, bin, dir string) *devProc {
	t.Helper()
	kafkaPort, regPort, httpAddr := freePortOf(t), freePortOf(t), "127.0.0.1:"+strconv.Itoa(freePortOf(t))
	d := &devProc{bin: bin, dir: dir, http: "http://" + httpAddr, log: &syncBuffer{}, done: make(chan error, 1)}
	d.env = append(os.Environ(),
		"TROUPE_BROKERS=127.0.0.1:"+strconv.Itoa(kafkaPort),
		"TROUPE_REGISTRY_URL=http://127.0.0.1:"+strconv.Itoa(regPort),
		"TROUPE_API_URL="+d.http,
		"TROUPE_LOG_LEVEL=warn",
	)
	// make run, on other ports and with a light demo load.
	d.cmd = exec.Command(bin, "dev", "--kafka-port", strconv.Itoa(kafkaPort), "--registry-port", strconv.Itoa(regPort), "--http", httpAddr, "--demo-rate", "2")
	d.cmd.Dir, d.cmd.Env = dir, d.env
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(d.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("troupe dev exited before it was ready: %v\n%s", err, tail(d.log.String(), 40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("troupe dev not ready after 90 s\n%s", tail(d.log.String(), 40))
		}
	}
}

// run runs a troupe command against the dev stack, from its directory, and
// returns its combined output and exit code.
func (d *devProc) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Dir, cmd.Env = d.dir, d.env
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("troupe %s: %v", strings.Join(args, " "), err)
	}
	return string(out), code
}

// stop is Ctrl-C: SIGINT, and wait for a clean exit.
func (d *devProc) stop(t *testing.T) {
	t.Helper()
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("troupe dev exited with %v after Ctrl-C\n%s", err, tail(d.log.String(), 30))
		}
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("troupe dev did not stop within 30 s of Ctrl-C\n%s", tail(d.log.String(), 30))
	}
}

func freePortOf(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
