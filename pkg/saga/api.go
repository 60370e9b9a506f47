package saga

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/troupehq/troupe/pkg/api"
)

// Errors of a Reader that the API answers with their own status.
var (
	// ErrNotFound means no instance with that id is known here (404).
	ErrNotFound = errors.New("saga instance not found")
	// ErrBadQuery means the query cannot be answered as asked (400).
	ErrBadQuery = errors.New("bad query")
	// ErrUnavailable means the answer needs partitions that no reachable
	// process serves right now: a rebalance, a restore, a peer down (503).
	ErrUnavailable = errors.New("saga instances unavailable")
)

// Query selects instances for List.
type Query struct {
	Status Status // empty: any
	Limit  int    // at most this many; 0 means DefaultLimit
	Cursor string // from a previous Page.Next; empty: from the start
}

// DefaultLimit and MaxLimit bound a List page.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Page is one page of List.
type Page struct {
	Items []Instance `json:"items"`
	Next  string     `json:"next,omitempty"` // cursor of the next page; empty at the end
}

// Stats counts instances by status.
type Stats struct {
	ByStatus map[Status]int `json:"byStatus"`
	// Partitions are the partitions counted: every partition of the saga
	// in a whole answer, those of one process with scope=local.
	Partitions []int32 `json:"partitions,omitempty"`
}

// Reader is what the saga API reads: the coordinator's store.
type Reader interface {
	Instance(ctx context.Context, id string) (*Instance, error)
	List(ctx context.Context, q Query) (Page, error)
	Stats(ctx context.Context) (Stats, error)
}

// Locator tells whether this process owns an instance's partition, and if
// not, the base URL of the process that does (empty when unknown).
type Locator interface {
	Owner(id string) (baseURL string, local bool)
}

// LocalReader is a Reader that merges the answers of several processes
// (Cluster); Local is the Reader of this process alone, which peers ask
// with scope=local.
type LocalReader interface {
	Reader
	Local() Reader
}

// Mount adds the saga API to srv:
//
//	GET /api/sagas/{id}                      one instance (307 to its owner when not here)
//	GET /api/sagas?status=&limit=&cursor=    a page of instances
//	GET /api/sagas/stats                     {"byStatus":{"COMPLETED":n,...},"partitions":[...]}
//
// With scope=local, a list or stats answers for this process's partitions
// only (how a Cluster asks its peers). A redirected request carries
// redirected=1 and is answered where it lands, so that two processes with
// stale views of the group cannot bounce a client between them.
func Mount(srv *api.Server, r Reader, loc Locator) {
	reader := func(req *http.Request) Reader {
		if lr, ok := r.(LocalReader); ok && req.URL.Query().Get("scope") == "local" {
			return lr.Local()
		}
		return r
	}
	srv.Handle("GET /api/sagas/stats", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		st, err := reader(req).Stats(req.Context())
		if err != nil {
			writeErr(w, err, "read saga stats")
			return
		}
		api.WriteJSON(w, http.StatusOK, st)
	}))
	srv.Handle("GET /api/sagas/{id}", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if loc != nil && req.URL.Query().Get("redirected") == "" {
			if owner, local := loc.Owner(id); !local && owner != "" {
				http.Redirect(w, req, owner+"/api/sagas/"+url.PathEscape(id)+"?redirected=1", http.StatusTemporaryRedirect)
				return
			}
		}
		inst, err := r.Instance(req.Context(), id)
		switch {
		case errors.Is(err, ErrNotFound):
			api.WriteError(w, http.StatusNotFound, "no saga instance %q (check the id: it is the saga key, e.g. the orderId; an instance appears once its trigger event is consumed)", id)
		case err != nil:
			writeErr(w, err, "read saga "+strconv.Quote(id))
		default:
			api.WriteJSON(w, http.StatusOK, inst)
		}
	}))
	srv.Handle("GET /api/sagas", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q, err := parseQuery(req.URL.Query())
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		page, err := reader(req).List(req.Context(), q)
		if err != nil {
			writeErr(w, err, "list sagas")
			return
		}
		if page.Items == nil {
			page.Items = []Instance{}
		}
		api.WriteJSON(w, http.StatusOK, page)
	}))
}

// writeErr answers err with the status its kind calls for.
func writeErr(w http.ResponseWriter, err error, what string) {
	switch {
	case errors.Is(err, ErrBadQuery):
		api.WriteError(w, http.StatusBadRequest, "%s: %v", what, err)
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNotServed):
		w.Header().Set("Retry-After", "1")
		api.WriteError(w, http.StatusServiceUnavailable, "%s: %v (retry in a moment)", what, err)
	default:
		api.WriteError(w, http.StatusInternalServerError, "%s: %v", what, err)
	}
}

func parseQuery(v url.Values) (Query, error) {
	q := Query{Status: Status(v.Get("status")), Cursor: v.Get("cursor"), Limit: DefaultLimit}
	switch q.Status {
	case "", Running, Completed, Compensating, Compensated, Failed:
	default:
		return q, errors.New("unknown status " + strconv.Quote(string(q.Status)) + " (use RUNNING, COMPLETED, COMPENSATING, COMPENSATED or FAILED)")
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, errors.New("limit must be a number from 1 to " + strconv.Itoa(MaxLimit))
		}
		q.Limit = n
	}
	return q, nil
}
