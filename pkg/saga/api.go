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
	// Reason selects the instances that ended, or are compensating, for
	// this reason (the failing event's short name, or "timeout"); empty:
	// any.
	Reason string
	// ID selects the instances whose id contains it; empty: any.
	ID     string
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
	// Orphans counts the orphans kept: events of ids whose trigger has not
	// come (no saga, not in ByStatus), and events a saga did not take.
	Orphans int `json:"orphans"`
	// Partitions are the partitions counted: every partition of the saga
	// in a whole answer, those of one process with scope=local.
	Partitions []int32 `json:"partitions,omitempty"`
	// overdue counts the instances stuck past their deadline (see
	// Store.overdueBefore), for troupe_saga_overdue_instances.
	overdue int
}

// OrphanPage is one page of Reader.Orphans.
type OrphanPage struct {
	Items []Orphan `json:"items"`
	Next  string   `json:"next,omitempty"` // cursor of the next page; empty at the end
}

// Reader is what the saga API reads: the coordinator's store.
type Reader interface {
	Instance(ctx context.Context, id string) (*Instance, error)
	// List returns instances newest first.
	List(ctx context.Context, q Query) (Page, error)
	Stats(ctx context.Context) (Stats, error)
	// Orphans returns the orphans kept (q.Status is ignored).
	Orphans(ctx context.Context, q Query) (OrphanPage, error)
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
//	GET /api/sagas?status=&reason=&id=&limit=&cursor=
//	                                         a page of instances, newest first
//	                                         (id: those whose id contains it)
//	GET /api/sagas/stats                     {"byStatus":{"COMPLETED":n,...},"orphans":n,"partitions":[...]}
//	GET /api/orphans?limit=&cursor=          a page of orphans: events that started no saga
//
// When r is a lone *Store (no peers), a list or stats needs every partition
// of the saga to be served here, and fails with 503 naming the cause
// otherwise, rather than answer for part of them.
//
// With scope=local, a list or stats answers for this process's partitions
// only (how a Cluster asks its peers). A redirected request carries
// redirected=1 and is answered where it lands, so that two processes with
// stale views of the group cannot bounce a client between them.
func Mount(srv *api.Server, r Reader, loc Locator) {
	// reader is the Reader for req, or why none can answer it whole.
	reader := func(req *http.Request) (Reader, error) {
		if lr, ok := r.(LocalReader); ok && req.URL.Query().Get("scope") == "local" {
			return lr.Local(), nil
		}
		if st, ok := r.(*Store); ok && loc == nil {
			return r, st.whole()
		}
		return r, nil
	}
	srv.Handle("GET /api/sagas/stats", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rd, err := reader(req)
		if err != nil {
			writeErr(w, err, "read saga stats")
			return
		}
		st, err := rd.Stats(req.Context())
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
		var ns *NotStartedError
		switch {
		case errors.As(err, &ns):
			api.WriteError(w, http.StatusNotFound, "no saga instance %q: %v", id, err)
		case errors.Is(err, ErrNotFound):
			api.WriteError(w, http.StatusNotFound, "no saga instance %q (check the id: it is the saga key, e.g. the orderId; an instance appears once its trigger event is consumed)", id)
		case err != nil:
			writeErr(w, err, "read saga "+strconv.Quote(id))
		default:
			inst.SortHistory()
			api.WriteJSON(w, http.StatusOK, inst)
		}
	}))
	srv.Handle("GET /api/sagas", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q, err := parseQuery(req.URL.Query())
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		rd, err := reader(req)
		if err != nil {
			writeErr(w, err, "list sagas")
			return
		}
		page, err := rd.List(req.Context(), q)
		if err != nil {
			writeErr(w, err, "list sagas")
			return
		}
		if page.Items == nil {
			page.Items = []Instance{}
		}
		for i := range page.Items {
			page.Items[i].SortHistory()
		}
		api.WriteJSON(w, http.StatusOK, page)
	}))
	srv.Handle("GET /api/orphans", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		v := req.URL.Query()
		v.Del("status")
		q, err := parseQuery(v)
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		rd, err := reader(req)
		if err != nil {
			writeErr(w, err, "list orphans")
			return
		}
		page, err := rd.Orphans(req.Context(), q)
		if err != nil {
			writeErr(w, err, "list orphans")
			return
		}
		if page.Items == nil {
			page.Items = []Orphan{}
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
		api.WriteError(w, http.StatusServiceUnavailable, "%s: %v", what, err)
	default:
		api.WriteError(w, http.StatusInternalServerError, "%s: %v", what, err)
	}
}

func parseQuery(v url.Values) (Query, error) {
	q := Query{Status: Status(v.Get("status")), Reason: v.Get("reason"), ID: v.Get("id"), Cursor: v.Get("cursor"), Limit: DefaultLimit}
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
