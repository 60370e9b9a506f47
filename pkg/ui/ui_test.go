package ui_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/pkg/ui"
	topologies "github.com/troupehq/troupe/topology"
)

// The page is served at / and its files under /ui/; other paths stay the
// API's (404 here, with no API mounted).
func TestServes(t *testing.T) {
	topo, err := topology.Parse("orders.yaml", topologies.Orders)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(prometheus.NewRegistry(), zerolog.Nop())
	ui.Mount(srv, topo)
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	for path, want := range map[string]string{
		"/":             `<script src="/ui/app.js">`,
		"/ui/app.js":    `/api/sagas/stats`,
		"/ui/style.css": `.COMPENSATED`,
		"/api/topology": `"node": "s_inventory"`,
	} {
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body without %q", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Get(h.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", resp.StatusCode)
	}
}
