package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/freeport"
)

// lockedBuffer is a bytes.Buffer that dev writes to while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeTCPPort(t *testing.T) int { return freeport.Port(t) }

// `troupe dev --demo-rate 0` on ports that are not the defaults, then the
// banner's commands as printed, after its export line: the README's
// `troupe produce` of an OrderPlaced succeeds at once (dev registered the
// schemas), `troupe saga get` finds it COMPLETED, and `troupe saga list` and
// `troupe tail` reach the stack too. A second `troupe dev` on the same data
// dir exits 2 naming the first one's pid.
//
// The stack has --auth-token-file: the banner's export line carries it,
// and the commands as printed send it; a command without it, or with
// another token, fails with an error naming the setting (authTokenRefused).
func TestDevBannerCommandsWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	for _, k := range []string{"TROUPE_BROKERS", "TROUPE_REGISTRY_URL", "TROUPE_API_URL", "TROUPE_AUTH_TOKEN", "TROUPE_AUTH_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("dev-token-5e1d9a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kafkaPort, regPort, httpPort := freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)
	args := []string{"dev", "--demo-rate", "0", "--data-dir", dir, "--kafka-port", strconv.Itoa(kafkaPort),
		"--registry-port", strconv.Itoa(regPort), "--http", "127.0.0.1:" + strconv.Itoa(httpPort), "--log-level", "error",
		"--auth-token-file", tokenFile}
	root := newRootCmd()
	banner := &lockedBuffer{}
	root.SetOut(banner)
	root.SetErr(banner)
	root.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop within 30 s")
		}
	}()
	ready := false
	for deadline := time.Now().Add(90 * time.Second); !ready && time.Now().Before(deadline); {
		if resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(httpPort) + "/readyz"); err == nil {
			resp.Body.Close()
			ready = resp.StatusCode == http.StatusOK
		}
		select {
		case err := <-done:
			t.Fatalf("dev exited: %v\n%s", err, banner.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !ready {
		t.Fatalf("dev not ready after 90 s:\n%s", banner.String())
	}

	var printed []string
	_, cmds, _ := strings.Cut(banner.String(), "In another terminal:\n")
	cmds, _, _ = strings.Cut(cmds, "Ctrl-C stops.")
	for _, l := range strings.Split(strings.TrimSpace(cmds), "\n") {
		printed = append(printed, strings.TrimSpace(l))
	}
	if len(printed) < 4 || !strings.HasPrefix(printed[0], "export TROUPE_BROKERS=127.0.0.1:"+strconv.Itoa(kafkaPort)+" ") ||
		!strings.HasSuffix(printed[0], " TROUPE_AUTH_TOKEN_FILE="+tokenFile) {
		t.Fatalf("banner's commands %q, want the export line first:\n%s", printed, banner.String())
	}
	for _, kv := range strings.Fields(strings.TrimPrefix(printed[0], "export ")) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}

	const order = `{"orderId":"order-1","customerId":"c1","amountCents":4200,"currency":"EUR",
		"items":[{"sku":"BOOK-1","quantity":1}],
		"shipTo":{"name":"Ada","line1":"1 Main St","city":"Paris","country":"FR"},
		"placedAt":"2026-11-23T10:00:00Z"}`
	if out, code := runCLI(t, "produce", "--topic", "orders", "--type", "troupe.example.orders.OrderPlaced", "--key", "order-1", "--data", order); code != exitOK {
		t.Fatalf("troupe produce after troupe dev --demo-rate 0: exit %d\n%s", code, out)
	}
	var status string
	for deadline := time.Now().Add(60 * time.Second); status != "COMPLETED"; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("saga order-1 is %q after 60 s, want COMPLETED", status)
		}
		out, code := runCLI(t, "saga", "get", "order-1")
		var inst struct{ Status string }
		if code == exitOK && json.Unmarshal([]byte(out), &inst) == nil {
			status = inst.Status
		}
	}
	ran := 0
	for _, line := range printed[1:] {
		for _, cmd := range strings.Split(line, ";") {
			f := strings.Fields(cmd)
			if slices.Contains(f, "--follow") || slices.Contains(f, "'{...}'") || slices.Contains(f, "ID") {
				continue // runs until stopped, or has a placeholder
			}
			if out, code := runCLI(t, f[1:]...); code != exitOK {
				t.Errorf("%s, as printed: exit %d\n%s", cmd, code, out)
			}
			ran++
		}
	}
	if ran == 0 {
		t.Errorf("no command of the banner ran as printed: %q", printed)
	}
	if out, code := runCLI(t, "tail", "--topic", "orders"); code != exitOK || !strings.Contains(out, `"order-1"`) {
		t.Errorf("troupe tail --topic orders: exit %d\n%s", code, out)
	}
	authTokenRefused(t, order)

	// A second dev on the same data dir (and ports: it must not get as far
	// as binding them).
	out, code := runCLI(t, args...)
	if code != exitUsage || !strings.Contains(out, "data dir "+dir+" is in use by another troupe dev (pid ") {
		t.Fatalf("second troupe dev: exit %d, want 2 and the lock message\n%s", code, out)
	}
	select {
	case err := <-done:
		t.Fatalf("the first dev stopped: %v", err)
	default:
	}
}

// authTokenRefused runs commands against a dev stack with a token (the
// environment points at it and its token file) without the token and with
// another one: the registry and the API refuse them, and the error names
// the setting.
func authTokenRefused(t *testing.T, order string) {
	t.Helper()
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"saga", "get", "order-1", "--auth-token-file="}, []string{"401 Unauthorized", "the API requires a token: set --auth-token-file or TROUPE_AUTH_TOKEN"}},
		{[]string{"saga", "stats", "--auth-token-file", wrong}, []string{"401 Unauthorized", "refused the token", "--auth-token-file or TROUPE_AUTH_TOKEN"}},
		{[]string{"produce", "--topic", "orders", "--type", "troupe.example.orders.OrderPlaced", "--key", "order-1", "--data", order, "--auth-token-file="},
			[]string{"answered 401 Unauthorized (send its token: set --auth-token-file or TROUPE_AUTH_TOKEN"}},
	} {
		out, code := runCLI(t, c.args...)
		if code == exitOK {
			t.Errorf("troupe %s without the token: exit 0\n%s", strings.Join(c.args, " "), out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("troupe %s: exit %d, output lacks %q:\n%s", strings.Join(c.args, " "), code, w, out)
			}
		}
		if strings.Contains(out, "dev-token-5e1d9a") {
			t.Errorf("troupe %s prints the token:\n%s", strings.Join(c.args, " "), out)
		}
	}
}
