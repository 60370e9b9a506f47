package main

import (
	"strings"
	"testing"
)

// TestTypos: a mistyped type, topic or key gets an answer that names the
// mistake and the closest right thing, never a wrong success.
func TestTypos(t *testing.T) {
	s := startAvroStack(t)
	s.expect(t, exitOK, nil, "schemas", "register", "--dir", schemaDir, "--topology", topologyFile)
	doc := strings.ReplaceAll(orderJSON, "o-1001", "bad-6")

	// A mistyped type is unknown, with the closest, not "--topic is required".
	s.expect(t, exitUsage, []string{`unknown event type "OrderPlacd" (did you mean OrderPlaced?)`, "PaymentAuthorized"},
		"produce", "--type", "OrderPlacd", "--data", doc, "--topology", topologyFile)
	s.expect(t, exitUsage, []string{`unknown event type "OrderPlacd" (did you mean OrderPlaced?)`},
		"produce", "--topic", "orders", "--type", "OrderPlacd", "--data", doc, "--topology", topologyFile)
	// A known type on a topology topic that does not carry it.
	s.expect(t, exitUsage, []string{"topic payments carries", "not OrderPlaced, which goes on orders"},
		"produce", "--topic", "payments", "--type", "OrderPlaced", "--data", doc, "--topology", topologyFile)
	// A --key that contradicts the document's key field.
	s.expect(t, exitUsage, []string{"--key other-key contradicts the document's orderId bad-6", "--force"},
		"produce", "--type", "OrderPlaced", "--key", "other-key", "--data", doc, "--topology", topologyFile)
	s.expect(t, exitOK, []string{"key other-key to orders"},
		"produce", "--type", "OrderPlaced", "--key", "other-key", "--data", doc, "--topology", topologyFile, "--force")
	// The right type alone derives the topic and the key.
	s.expect(t, exitOK, []string{"produced troupe.example.orders.OrderPlaced key bad-6 to orders partition"},
		"produce", "--type", "OrderPlaced", "--data", doc, "--topology", topologyFile)
	s.expect(t, exitOK, []string{"key bad-6 to orders"},
		"produce", "--type", "OrderPlaced", "--key", "bad-6", "--data", doc, "--topology", topologyFile)

	// A topic outside the topology that does not exist: produce never
	// creates one, and says what does.
	s.expect(t, exitFailure, []string{"topic audit does not exist (troupe produce never creates one: troupe topics create audit"},
		"produce", "--topic", "audit", "--type", "OrderPlaced", "--schema", schemaDir+"/OrderPlaced.avsc", "--data", doc, "--topology", topologyFile)

	// tail: an unknown type is refused with the known ones; a known type
	// that the topic does not hold prints nothing.
	s.expect(t, exitUsage, []string{`unknown event type "Nope"`, "the known types are OrderPlaced, "}, "tail", "--topic", "orders", "--type", "Nope", "--topology", topologyFile)
	s.expect(t, exitUsage, []string{`unknown event type "PaymentAuthorised" (did you mean PaymentAuthorized?)`}, "tail", "--topic", "payments", "--type", "PaymentAuthorised", "--topology", topologyFile)
	if got := tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "orders", "--type", "OrderPlaced", "--topology", topologyFile)); len(got) != 3 {
		t.Errorf("tail --type OrderPlaced printed %d events, want 3", len(got))
	}
	// Without a topology, the registry's subjects say which types exist.
	s.expect(t, exitUsage, []string{`unknown event type "Nope"`, "troupe.example.orders.OrderPlaced"}, "tail", "--topic", "orders", "--type", "Nope", "--topology", "")
}

// TestRunUnknownStep: troupe run names the closest step or saga.
func TestRunUnknownStep(t *testing.T) {
	ctx := t.Context()
	for args, want := range map[string]string{
		"--step paymnet":                `unknown step "paymnet" (did you mean payment?)`,
		"--step saga":                   "the coordinator is --coordinator order-fulfillment",
		"--coordinator order-fulfilmnt": `unknown saga "order-fulfilmnt" (did you mean order-fulfillment?)`,
	} {
		_, errs, code := dlqTestRun(t, ctx, append([]string{"run", "--topology", testTopology}, strings.Fields(args)...)...)
		if code != exitUsage || !strings.Contains(errs, want) {
			t.Errorf("troupe run %s: exit %d, want 2 and %q:\n%s", args, code, want, errs)
		}
	}
}
