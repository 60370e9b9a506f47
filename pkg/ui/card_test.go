package ui_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// renderDeadLetters runs app.js in Node over a minimal DOM, with the API
// answering fixtures, and returns the #deadletters card as HTML, then its
// text.
func renderDeadLetters(t *testing.T, fixtures map[string]any) string {
	return runApp(t, fixtures)
}

// runApp runs app.js in Node over a minimal DOM (testdata/render.js), with
// the API answering fixtures, and returns what render.js prints for args.
func runApp(t *testing.T, fixtures map[string]any, args ...string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not installed")
		}
		t.Skip("node is not installed; this test renders app.js with it")
	}
	f := filepath.Join(t.TempDir(), "fixtures.json")
	b, _ := json.Marshal(fixtures)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, append([]string{"testdata/render.js", "static/app.js", f}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("node render.js: %v\n%s", err, out)
	}
	return string(out)
}

// The dead-letter card lists the outstanding dead letters of every step
// and of the coordinator, with the buttons and the commands that settle
// them; the buttons are off, saying why, where the server takes no
// actions.
func TestDeadLetterCard(t *testing.T) {
	html := renderDeadLetters(t, map[string]any{"/api/deadletters": map[string]any{"steps": []map[string]any{
		{"step": "payment", "topic": "orders.payment.dlq", "outstanding": 0, "settled": 2, "command": "troupe dlq list --step payment"},
		{"step": "inventory", "topic": "orders.inventory.dlq", "outstanding": 1, "command": "troupe dlq list --step inventory",
			"letters": []map[string]any{{"partition": 3, "offset": 0, "key": "o-err", "event": "PaymentAuthorized", "error": "warehouse system unavailable", "attempts": 5}}},
		{"step": "saga.order-fulfillment", "topic": "orders.saga.order-fulfillment.dlq", "outstanding": 2, "command": "troupe dlq list --coordinator order-fulfillment",
			"letters": []map[string]any{{"partition": 1, "offset": 7, "key": "o-py", "event": "OrderPlaced", "error": "ce_time has no zone", "attempts": 1}}},
	}}})
	for _, want := range []string{
		"Outstanding dead letters (3)",
		`data-step="inventory"`, "troupe dlq list --step inventory", "troupe dlq replay --step inventory --partition 3 --offset 0", "warehouse system unavailable",
		`data-step="saga.order-fulfillment"`, "coordinator (saga.order-fulfillment)", "troupe dlq list --coordinator order-fulfillment",
		"troupe dlq discard --coordinator order-fulfillment --partition 1 --offset 7", "ce_time has no zone",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the card has no %q:\n%s", want, html)
		}
	}
	if strings.HasPrefix(html, "hidden") || strings.Contains(html, `data-step="payment"`) {
		t.Errorf("the card is hidden, or shows a step without outstanding dead letters:\n%s", html)
	}
	if !strings.Contains(html, `<button type="button" data-action="replay" title="dry run first, then confirm">`) ||
		!strings.Contains(html, `data-deadletter="saga.order-fulfillment/1/7"`) {
		t.Errorf("the card has no enabled replay button, or none for the coordinator's dead letter:\n%s", html)
	}
	off := "actions are off: bind --http to 127.0.0.1"
	fx := map[string]any{"/api/deadletters": map[string]any{"actionsOff": off, "steps": []map[string]any{
		{"step": "inventory", "topic": "orders.inventory.dlq", "outstanding": 1, "command": "troupe dlq list --step inventory",
			"letters": []map[string]any{{"partition": 3, "offset": 0, "key": "o-err", "event": "PaymentAuthorized", "error": "x", "attempts": 5}}}}}}
	if html := renderDeadLetters(t, fx); !strings.Contains(html, `data-action="replay" disabled="disabled" title="`+off) || !strings.Contains(html, ">"+off+"<") {
		t.Errorf("with actions off, the buttons are not disabled with the reason:\n%s", html)
	}

	// None outstanding, or no such endpoint: no card.
	for name, fx := range map[string]map[string]any{
		"none outstanding": {"/api/deadletters": map[string]any{"steps": []map[string]any{{"step": "payment", "outstanding": 0, "command": "x"}}}},
		"no endpoint":      {},
	} {
		if html := renderDeadLetters(t, fx); !strings.HasPrefix(html, "hidden") {
			t.Errorf("%s: the card shows:\n%s", name, html)
		}
	}
}
