package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

	dir := t.TempDir()
	copyDir(t, "../../topology", filepath.Join(dir, "topology"))
	bin := buildTroupe(t, dir)
	d := startDev(t, bin, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- troupe dev (last lines):\n%s", tail(d.log.String(), 30))
		}
	})
	// What each command must do, in the README's order. P and N are the
	// dead letter's partition and offset, which saga get tells.
	steps := []runbook.Step{
		{Cmd: `./troupe produce --type OrderPlaced --data '{"orderId":"o-err","customerId":"c-1", "amountCents":1200,"currency":"EUR","items":[{"sku":"ERR-CLOCK","quantity":1}], "shipTo":{"name":"Ada","line1":"1 Main St","city":"London","country":"GB"}, "placedAt":"2026-11-23T12:00:00Z"}'`,
			Want: []string{"produced troupe.example.orders.OrderPlaced key o-err to orders partition"}},
		{Cmd: "troupe saga get o-err", Want: []string{`"deadLetters"`, `"step": "inventory"`}, Wait: 60 * time.Second},
		{Cmd: "troupe dlq list --step inventory", Want: []string{"o-err", "PaymentAuthorized", "warehouse system unavailable", "1 outstanding"},
			After: func() {
				// The UI's dead-letter card reads the same, the
				// coordinator's DLQ included.
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
			}},
		{Cmd: "troupe dlq show --step inventory --partition P --offset N", Want: []string{"step: inventory", "ERR-CLOCK", "neither replayed nor discarded yet"}},
		{Cmd: "troupe dlq list --coordinator order-fulfillment", Want: []string{"orders.saga.order-fulfillment.dlq is empty"}},
		{Cmd: "troupe dlq replay --step inventory --partition P --offset N --dry-run", Want: []string{"would replay", "dry run: 1 dead letter(s) of step inventory selected"}},
		{Cmd: "troupe dlq discard --step inventory --partition P --offset N", Want: []string{"discarded ", "discarded 1 dead letter(s) of step inventory into orders.inventory.retry"}},
		{Cmd: "troupe dlq discard --step inventory --partition P --offset N", Want: []string{"nothing written", "settled already: discarded at"}},
		{Cmd: "troupe dlq replay --step inventory --all --dry-run", Want: []string{"nothing to replay: the 1 selected dead letter(s) of step inventory are settled already"}},
		{Cmd: "troupe replay --topic orders --group orders.payment --from-time -1h --dry-run", Code: exitUsage, Want: []string{"group orders.payment is Stable", "live member", "stop every consumer of the group"}},
		{Cmd: "troupe topics create orders-audit", Want: []string{"created topic orders-audit with 8 partitions"}},
		{Cmd: "troupe replay --topic orders --from-time -1h --to-topic orders-audit", Want: []string{"copied ", "to orders-audit", "kept their partition numbers"}},
		{Cmd: "troupe state rebuild --step payment", Code: exitFailure, Want: []string{"state dir .troupe/state/orders.payment is in use by a running process (stop the step first)"}},
		{Cmd: "troupe state rebuild --step payment --dev", Want: []string{"rebuilt .troupe/state/orders.payment from orders.payment.changelog: 8 partitions"},
			Before: func() {
				// While dev runs, --dev refuses; then dev is stopped as the
				// README says.
				out, code := d.run(t, "state", "rebuild", "--step", "payment", "--dev")
				if code != exitUsage || !strings.Contains(out, "is in use by another troupe dev") {
					t.Errorf("state rebuild --dev while dev runs: exit %d, want 2 and 'in use by another troupe dev':\n%s", code, out)
				}
				d.stop(t)
			}},
	}
	runbook.Run(t, cmds, steps, func(args ...string) (string, int) { return d.run(t, args...) })

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
	log      *lockedBuffer
	done     chan error
}

func startDev(t *testing.T, bin, dir string) *devProc {
	t.Helper()
	kafkaPort, regPort, httpAddr := freeTCPPort(t), freeTCPPort(t), "127.0.0.1:"+strconv.Itoa(freeTCPPort(t))
	d := &devProc{bin: bin, dir: dir, http: "http://" + httpAddr, log: &lockedBuffer{}, done: make(chan error, 1)}
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

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
