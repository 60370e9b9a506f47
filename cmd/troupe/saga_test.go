package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/saga"
)

// sagaRun runs the troupe CLI in process against the saga API at api and
// returns its standard output, failing the test on an error.
func sagaRun(t *testing.T, api string, args ...string) string {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append(args, "--api", api, "--log-level", "error"))
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("troupe %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// The saga commands print what a reader looks for first: get in the API's
// field order (not alphabetical), list newest first with a cursor past the
// first page, stats with the orphans, and the orphans themselves with where
// they came from.
func TestSagaCommandsOutput(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	inst := saga.Instance{
		ID: "order-7", Saga: "order-fulfillment", Status: saga.Compensated, Reason: "OutOfStock",
		Completed: []string{"payment"}, Compensated: []string{"payment"}, StartedAt: t0, UpdatedAt: t0, EndedAt: t0,
		History: []saga.Entry{{Type: "OrderPlaced", Time: t0, Topic: "orders", Partition: 3, Offset: 41}},
	}
	var cursors []string
	var queries []url.Values
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/sagas/order-7", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(inst) })
	mux.HandleFunc("GET /api/sagas", func(w http.ResponseWriter, r *http.Request) {
		cursors = append(cursors, r.URL.Query().Get("cursor"))
		queries = append(queries, r.URL.Query())
		page := saga.Page{Items: []saga.Instance{inst}, Next: "NEXT"}
		if r.URL.Query().Get("cursor") == "NEXT" {
			page = saga.Page{Items: []saga.Instance{}}
		}
		_ = json.NewEncoder(w).Encode(page)
	})
	mux.HandleFunc("GET /api/sagas/stats", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(saga.Stats{ByStatus: map[saga.Status]int{saga.Completed: 4}, Orphans: 2})
	})
	mux.HandleFunc("GET /api/orphans", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(saga.OrphanPage{Items: []saga.Orphan{{ID: "ghost-1", Type: "ShipmentScheduled", Topic: "shipping", Partition: 5, Offset: 12, Source: "kcat", Time: t0}}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	out := sagaRun(t, srv.URL, "saga", "get", "order-7")
	order := []string{`"id"`, `"saga"`, `"status"`, `"reason"`, `"completed"`, `"compensated"`, `"startedAt"`, `"history"`}
	last := -1
	for n, k := range order {
		i := strings.Index(out, k)
		if i < last {
			t.Fatalf("saga get: %s is not after %s; want the order %v:\n%s", k, order[n-1], order, out)
		}
		last = i
	}
	if !strings.Contains(out, `"topic": "orders"`) {
		t.Errorf("saga get: history entry without its topic:\n%s", out)
	}

	out = sagaRun(t, srv.URL, "saga", "list")
	if !strings.Contains(out, "order-7") || !strings.Contains(out, "(more: add --cursor NEXT)") {
		t.Errorf("saga list: want the row and the cursor of the next page:\n%s", out)
	}
	sagaRun(t, srv.URL, "saga", "list", "--cursor", "NEXT")
	if len(cursors) != 2 || cursors[1] != "NEXT" {
		t.Errorf("saga list --cursor NEXT asked with cursors %q", cursors)
	}

	sagaRun(t, srv.URL, "saga", "list", "--status", "compensated", "--reason", "OutOfStock", "--id", "order-7")
	want := url.Values{"status": {"COMPENSATED"}, "reason": {"OutOfStock"}, "id": {"order-7"}, "limit": {"50"}}
	if q := queries[len(queries)-1]; !maps.EqualFunc(q, want, slices.Equal) {
		t.Errorf("saga list --status compensated --reason OutOfStock --id order-7 asked %v, want %v", q, want)
	}

	if out := sagaRun(t, srv.URL, "saga", "stats"); !strings.Contains(out, "orphans") || !strings.Contains(out, "2") {
		t.Errorf("saga stats: want the orphans counted:\n%s", out)
	}
	if out := sagaRun(t, srv.URL, "saga", "orphans"); !strings.Contains(out, "ghost-1") || !strings.Contains(out, "shipping/5@12") || !strings.Contains(out, "kcat") {
		t.Errorf("saga orphans: want id, topic/partition@offset and source:\n%s", out)
	}
}
