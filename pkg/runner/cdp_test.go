package runner

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is headless Chromium driven through the DevTools protocol over
// a pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte,
// commands on fd 3, answers on fd 4), attached to one page. It needs no
// WebSocket and no driver: what a user does (load, click, resize) is
// Runtime.evaluate and Emulation calls.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	w       *os.File
	stderr  strings.Builder
	session string

	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpAnswer
	gone    chan struct{}
}

type cdpAnswer struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts Chromium at path with a blank page of width x height
// and returns it attached to that page; the test's cleanup stops it.
func startBrowser(t *testing.T, path string, width, height int) *browser {
	t.Helper()
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ansR, ansW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, w: cmdW, waiting: map[int]chan cdpAnswer{}, gone: make(chan struct{})}
	// The flags keep Chromium off the network beyond the page: this
	// machine's network is closed, and a first run phones home otherwise.
	b.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	b.cmd.ExtraFiles = []*os.File{cmdR, ansW} // fd 3 and 4
	b.cmd.Stderr = &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	cmdR.Close()
	ansW.Close()
	go b.read(ansR)
	t.Cleanup(b.stop)

	var target struct{ TargetID string }
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct{ SessionID string }
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	b.resize(width, height)
	return b
}

func (b *browser) read(r io.ReadCloser) {
	defer close(b.gone)
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var a cdpAnswer
		if json.Unmarshal(msg[:len(msg)-1], &a) != nil || a.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.waiting[a.ID]
		delete(b.waiting, a.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- a
		}
	}
}

func (b *browser) stop() {
	b.w.Close() // Chromium exits when its pipe closes
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
}

// call sends a DevTools command (to the page's session unless session is
// "" before attaching) and decodes its result into result.
func (b *browser) call(session, method string, params, result any) {
	b.t.Helper()
	if err := b.try(session, method, params, result); err != nil {
		b.t.Fatalf("chromium %s: %v\n%s", method, err, b.stderr.String())
	}
}

func (b *browser) try(session, method string, params, result any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpAnswer, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(raw, 0)); err != nil {
		return err
	}
	select {
	case a := <-ch:
		if a.Error != nil {
			return fmt.Errorf("%s (code %d)", a.Error.Message, a.Error.Code)
		}
		if result != nil {
			return json.Unmarshal(a.Result, result)
		}
		return nil
	case <-b.gone:
		return errors.New("chromium exited")
	case <-time.After(60 * time.Second):
		return errors.New("no answer in 60 s")
	}
}

// resize sets the page's viewport, as a window of that size would.
func (b *browser) resize(width, height int) {
	b.t.Helper()
	b.call(b.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500,
	}, nil)
}

// open loads url in the page.
func (b *browser) open(url string) {
	b.t.Helper()
	b.call(b.session, "Page.navigate", map[string]any{"url": url}, nil)
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into v.
func (b *browser) eval(expr string, v any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.try(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res); err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("%s %s", e.Text, e.Exception.Description)
	}
	if v == nil || len(res.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(res.Result.Value, v)
}

// must evaluates expr into v, failing the test on an error.
func (b *browser) must(expr string, v any) {
	b.t.Helper()
	if err := b.eval(expr, v); err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
}

// waitFor polls expr, a JavaScript condition, until it is true; after d it
// fails the test with what describe (an expression) says of the page.
func (b *browser) waitFor(ctx context.Context, what, expr string, d time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var ok bool
		err := b.eval("!!("+expr+")", &ok)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var text string
			_ = b.eval(`document.body ? document.body.innerText.slice(0, 3000) : ""`, &text)
			b.t.Fatalf("%s: not so after %v (%v); the page reads:\n%s", what, d, err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves the whole page, as wide as the viewport, to path as
// PNG.
func (b *browser) screenshot(path string, width, height int) {
	b.t.Helper()
	var full int
	b.must("document.documentElement.scrollHeight", &full)
	b.resize(width, max(full, height))
	var shot struct{ Data string }
	b.call(b.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	b.resize(width, height)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
