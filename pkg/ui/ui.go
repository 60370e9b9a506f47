// Package ui is troupe's web UI: one page over the saga API (DESIGN §5)
// that shows the instances by status, a page of them, and one instance's
// steps, outstanding dead letters (with the troupe dlq command that settles
// each) and history. It is static files embedded in the binary, with no
// build step and no dependencies; the page reads /api/sagas and refreshes
// itself every 2 s.
package ui

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/troupehq/troupe/pkg/api"
)

//go:embed static
var static embed.FS

// Mount serves the UI on srv: the page at / and its files under /ui/.
func Mount(srv *api.Server) {
	files, _ := fs.Sub(static, "static")
	fileServer := http.FileServerFS(files)
	srv.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, files, "index.html")
	}))
	srv.Handle("GET /ui/", http.StripPrefix("/ui/", fileServer))
}
