package logging

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestDurationsCarryTheirUnit: a duration field reads as one, not as a
// bare number of unknown unit (issue 16 saw took=12.276369).
func TestDurationsCarryTheirUnit(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "info", FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Dur("took", 12276369*time.Nanosecond).Dur("handler_timeout", 5*time.Second).Msg("x")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	if got["took"] != "12.276369ms" || got["handler_timeout"] != "5s" {
		t.Errorf("took %v, handler_timeout %v; want \"12.276369ms\" and \"5s\": %s", got["took"], got["handler_timeout"], buf.Bytes())
	}
}
