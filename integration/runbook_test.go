package integration

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/integration/runbook"
)

// TestRunbookRealKafka runs the README runbook's commands, in the README's
// order (runbook.Commands), against a deployment on the real broker: the
// built-in registry, topics apply, and each step and the coordinator as its
// own `troupe run` process on the defaults (state in .troupe/state of the
// working directory), as the README's Deployment section has it. Where the
// runbook says to stop the step first, the test does. cmd/troupe's
// TestRunbook runs them against troupe dev.
func TestRunbookRealKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	brokers := kafkaharness.Brokers()
	cl := newClient(t, brokers)
	// The runbook names the example's own topics and groups: they must be
	// this test's.
	tds, err := kadm.NewClient(cl).ListTopics(ctx, "orders", "orders-audit")
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range tds {
		if td.Err == nil {
			t.Skipf("the broker has topic %s already: the runbook's names need a broker of their own (the harness's fresh one)", td.Topic)
		}
	}

	dir := t.TempDir()
	for _, d := range []string{"topology", "schemas"} {
		if err := os.CopyFS(filepath.Join(dir, d), os.DirFS(filepath.Join("..", d))); err != nil {
			t.Fatal(err)
		}
	}
	regAddr, coordAddr := freeAddr(t), freeAddr(t)
	env := append(os.Environ(),
		"TROUPE_BROKERS="+strings.Join(brokers, ","),
		"TROUPE_REGISTRY_URL=http://"+regAddr,
		"TROUPE_API_URL=http://"+coordAddr,
		"TROUPE_LOG_FORMAT=json", "TROUPE_LOG_LEVEL=warn",
	)
	run := func(args ...string) (string, int) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(rctx, troupeBin(t), args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("troupe %s: %v", strings.Join(args, " "), err)
		}
		return string(out), 0
	}
	procs := map[string]*runbookProc{}
	// start runs troupe args until stopped, and waits until ready answers
	// 200.
	start := func(name, ready string, args ...string) {
		t.Helper()
		p := &runbookProc{name: name, log: &lockedBuffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(troupeBin(t), args...)
		p.cmd.Dir, p.cmd.Env = dir, env
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.err = p.cmd.Wait(); close(p.done) }()
		procs[name] = p
		eventually(t, 2*time.Minute, name+" ready", func() (bool, string) {
			select {
			case <-p.done:
				t.Fatalf("%s exited: %v\n%s", name, p.err, tail(p.log.String(), 30))
			default:
			}
			resp, err := http.Get(ready)
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == 200, resp.Status
		})
	}
	stop := func(name string) {
		t.Helper()
		p := procs[name]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not stop within 30 s of SIGTERM", name)
		}
	}
	t.Cleanup(func() {
		for name, p := range procs {
			select {
			case <-p.done:
			default:
				stop(name)
			}
			if t.Failed() {
				t.Logf("--- log of %s (last 20 lines)\n%s", name, tail(p.log.String(), 20))
			}
		}
	})

	// The deployment: registry, topics, schemas, steps, coordinator.
	_, regPort, _ := strings.Cut(regAddr, ":")
	start("registry", "http://"+regAddr+"/subjects", "registry", "--port", regPort)
	for _, args := range [][]string{{"topics", "apply"}, {"schemas", "register"}} {
		if out, code := run(args...); code != 0 {
			t.Fatalf("troupe %s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	stepHTTP := map[string]string{}
	startStep := func(step string) {
		if stepHTTP[step] == "" {
			stepHTTP[step] = freeAddr(t)
		}
		start(step, "http://"+stepHTTP[step]+"/readyz", "run", "--step", step, "--http", stepHTTP[step])
	}
	for _, s := range []string{"payment", "inventory", "shipping"} {
		startStep(s)
	}
	start("coordinator", "http://"+coordAddr+"/readyz", "run", "--coordinator", "order-fulfillment", "--http", coordAddr)

	var cmds []string
	cmds, err = runbook.Commands("../README.md", runbook.LooksLikeName)
	if err != nil {
		t.Fatal(err)
	}
	steps := []runbook.Step{
		{Cmd: `./troupe produce --type OrderPlaced --data '{"orderId":"o-err","customerId":"c-1", "amountCents":1200,"currency":"EUR","items":[{"sku":"ERR-CLOCK","quantity":1}], "shipTo":{"name":"Ada","line1":"1 Main St","city":"London","country":"GB"}, "placedAt":"2026-11-23T12:00:00Z"}'`,
			Want: []string{"key o-err to orders partition"}},
		{Cmd: "troupe saga get o-err", Want: []string{`"deadLetters"`, `"step": "inventory"`}, Wait: 90 * time.Second},
		{Cmd: "troupe dlq list --step inventory", Want: []string{"o-err", "PaymentAuthorized", "warehouse system unavailable", "1 outstanding"}},
		{Cmd: "troupe dlq show --step inventory --partition P --offset N", Want: []string{"step: inventory", "ERR-CLOCK"}},
		{Cmd: "troupe dlq list --coordinator order-fulfillment", Want: []string{"orders.saga.order-fulfillment.dlq is empty"}},
		{Cmd: "troupe dlq replay --step inventory --partition P --offset N --dry-run", Want: []string{"would replay", "dry run: 1 dead letter(s)"}},
		{Cmd: "troupe dlq discard --step inventory --partition P --offset N", Want: []string{"discarded 1 dead letter(s) of step inventory"}},
		{Cmd: "troupe dlq discard --step inventory --partition P --offset N", Want: []string{"nothing written", "settled already: discarded"}},
		{Cmd: "troupe dlq replay --step inventory --all --dry-run", Want: []string{"are settled already"}},
		// "stop the step's replicas, then ...": here the group is empty.
		{Cmd: "troupe replay --topic orders --group orders.payment --from-time -1h --dry-run", Want: []string{"dry run: would rewind group orders.payment on orders"},
			Before: func() { stop("payment") }, After: func() { startStep("payment") }, Wait: 90 * time.Second},
		{Cmd: "troupe topics create orders-audit", Want: []string{"created topic orders-audit with 8 partitions"}},
		{Cmd: "troupe replay --topic orders --from-time -1h --to-topic orders-audit", Want: []string{"copied ", "records kept their partition numbers"}},
		// "stop the process, then ...": troupe run's default state dir.
		{Cmd: "troupe state rebuild --step payment", Want: []string{"rebuilt .troupe/state/orders.payment from orders.payment.changelog: 8 partitions"},
			Before: func() { stop("payment") }, After: func() { startStep("payment") }},
		// On troupe dev only: here there is no dev data to open.
		{Cmd: "troupe state rebuild --step payment --dev", Code: 2, Want: []string{"holds no troupe dev broker data"}},
	}
	runbook.Run(t, cmds, steps, run)
}

type runbookProc struct {
	name string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error
}
