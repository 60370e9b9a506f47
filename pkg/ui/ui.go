// Package ui is troupe's web UI: one page over the saga API (README: Sagas).
// Its overview shows the saga's diagram, the instances by status, the
// outstanding dead letters and a page of instances, searched by id, status
// and reason; an instance's page shows its path on the diagram, a
// timeline of its steps and compensations, its history (each entry opens
// the event, decoded) and its dead letters, which it replays or discards
// where the server allows actions. It is static files embedded in the
// binary, with no build step and no dependencies; the page reads the API
// and refreshes itself every 2 s. When the API requires a token
// (api.Server.RequireToken) the page takes it from its URL fragment
// (#token=…) or asks for it, and sends it on every request
// (static/auth.js); the page itself is open.
package ui

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/topology"
)

//go:embed static
var static embed.FS

// Mount serves the UI of t's saga on srv: the page at / and its files
// under /ui/, and GET /api/topology, the saga's steps and its diagram
// (Topology).
func Mount(srv *api.Server, t *topology.Topology) {
	files, _ := fs.Sub(static, "static")
	fileServer := http.FileServerFS(files)
	srv.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, files, "index.html")
	}))
	srv.Handle("GET /ui/", http.StripPrefix("/ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})))
	view := NewTopology(t)
	srv.Handle("GET /api/topology", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, view)
	}))
}

// Topology is the answer of GET /api/topology: what the page needs of the
// saga to draw its diagram and an instance's path and timeline. Event
// types are short names, as the saga API's history has them.
type Topology struct {
	App         string   `json:"app"`
	Saga        string   `json:"saga"`
	Trigger     string   `json:"trigger"`
	CompletesOn []string `json:"completesOn"`
	FailsOn     []string `json:"failsOn"`
	Deadline    string   `json:"deadline,omitempty"`
	Steps       []Step   `json:"steps"`
	// Wide is the diagram laid out left to right; Narrow top to bottom,
	// for a narrow screen.
	Wide   topology.Layout `json:"wide"`
	Narrow topology.Layout `json:"narrow"`
}

// Step is one step of Topology.
type Step struct {
	Name        string   `json:"name"`
	On          []string `json:"on"`
	Emits       []string `json:"emits"`
	CompletedBy string   `json:"completedBy,omitempty"`
	Command     string   `json:"command,omitempty"` // its compensation command
	Ack         string   `json:"ack,omitempty"`
	// Node is its node's id in the diagram.
	Node string `json:"node"`
}

// NewTopology is t as GET /api/topology answers it.
func NewTopology(t *topology.Topology) Topology {
	short := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = t.ShortName(n)
		}
		return out
	}
	g := t.Graph()
	v := Topology{App: t.App, Saga: t.Saga, Trigger: t.ShortName(t.Trigger), CompletesOn: short(t.CompletesOn), FailsOn: short(t.FailsOn),
		Wide: g.Layout(false), Narrow: g.Layout(true)}
	if t.Deadline > 0 {
		v.Deadline = t.Deadline.String()
	}
	for _, s := range t.Steps {
		st := Step{Name: s.Name, On: short(s.On), Emits: short(s.Emits), CompletedBy: t.ShortName(s.CompletedBy),
			Command: t.ShortName(s.Compensation.Command), Ack: t.ShortName(s.Compensation.Ack)}
		for _, n := range g.Nodes {
			if n.Kind == topology.NodeStep && n.Name == s.Name {
				st.Node = n.ID
			}
		}
		v.Steps = append(v.Steps, st)
	}
	return v
}
