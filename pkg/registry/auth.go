package registry

import (
	"net/http"
	"strings"

	"github.com/troupehq/troupe/pkg/auth"
)

// withAuth puts h behind the tokens of cfg.Auth, answering refusals in the
// Confluent format (error codes 40101 and 40301, as Confluent's own
// registry does).
func withAuth(h http.Handler, t auth.Tokens) http.Handler {
	return auth.Handler(h, t, auth.Options{
		Realm: "troupe schema registry",
		Read:  readOnly,
		Error: func(w http.ResponseWriter, status int, msg string) {
			code := 40101
			if status == http.StatusForbidden {
				code = 40301
			}
			writeJSON(w, status, &apiError{status, code, msg})
		},
	})
}

// readOnly reports the requests a read token may make: GETs, and the POSTs
// that change nothing (looking a schema up, checking compatibility), which
// a serializer with auto.register.schemas=false and `troupe schemas check`
// send.
func readOnly(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodPost:
		p := strings.Trim(r.URL.Path, "/")
		return strings.HasPrefix(p, "compatibility/") ||
			strings.HasPrefix(p, "subjects/") && strings.Count(p, "/") == 1
	}
	return false
}
