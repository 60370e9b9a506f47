package saga

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/metrics"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/topology"
)

// ErrNotServed means the instance's partition is not processed by this
// process right now (it is elsewhere, restoring, or moving) and the process
// does not know where it is. Retry, or ask another coordinator.
var ErrNotServed = errors.New("partition not served here")

// Store is the Reader of one coordinator process: the instances of the
// partitions it processes, read from its local state store (what the last
// committed transaction applied). Instances are listed newest first (by
// start time, then id), which a cursor remembers, so that pages from several
// processes merge into one order (Cluster). Ids that hold only orphans are
// no instances: they are listed by Orphans and counted in Stats.Orphans.
type Store struct {
	rt    *step.Runtime
	t     *topology.Topology
	parts int32
	hash  kgo.TopicPartitioner

	mu       sync.Mutex
	cached   Stats
	cachedAt time.Time
}

// NewStore reads the instances of the coordinator run by rt, for topology t.
func NewStore(rt *step.Runtime, t *topology.Topology) *Store {
	return &Store{rt: rt, t: t, parts: max(t.Partitions, 1), hash: kgo.StickyKeyPartitioner(nil).ForTopic("")}
}

// Partition is the partition of instance id: where Kafka's default
// partitioner (and every troupe producer) puts its events on every topic.
func (s *Store) Partition(id string) int32 {
	return int32(s.hash.Partition(&kgo.Record{Key: []byte(id)}, int(s.parts)))
}

// Partitions is the number of partitions of the saga's topics.
func (s *Store) Partitions() int32 { return s.parts }

// Serves reports whether this process processes partition p now.
func (s *Store) Serves(p int32) bool { return slices.Contains(s.rt.Partitions(), p) }

// Instance returns instance id if its partition is served here. An id
// that has only orphans is not an instance: its error is a
// *NotStartedError, which is ErrNotFound.
func (s *Store) Instance(_ context.Context, id string) (*Instance, error) {
	p := s.Partition(id)
	if !s.Serves(p) {
		return nil, fmt.Errorf("instance %q is in partition %d, which this coordinator does not serve now (%w): a rebalance or a restore, retry in a moment; if it lasts, %s", id, p, ErrNotServed, s.elsewhere())
	}
	raw, ok, err := s.rt.ReadInstance(p, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	var inst Instance
	if err := json.Unmarshal(raw, &inst); err != nil {
		return nil, fmt.Errorf("stored instance %q: %w", id, err)
	}
	if !inst.Started() {
		return nil, &NotStartedError{ID: id, Trigger: s.t.ShortName(s.t.Trigger), Orphans: len(inst.Orphans)}
	}
	return &inst, nil
}

// whole reports whether this process serves every partition of the saga,
// and if not, why and what to do: what a lone Store (no Cluster) must
// check before it answers for the whole saga.
func (s *Store) whole() error {
	mine := s.rt.Partitions()
	switch {
	case len(mine) == int(s.parts):
		return nil
	case len(mine) == 0:
		return fmt.Errorf("%w: this coordinator holds no partition of the saga yet (starting, restoring or rebalancing: retry in a moment)", ErrUnavailable)
	}
	return fmt.Errorf("%w: this coordinator serves partitions %v of the saga's %d and would count only those; a rebalance (retry in a moment), or %s", ErrUnavailable, mine, s.parts, s.elsewhere())
}

// elsewhere says where the partitions this process does not serve are, as
// far as a lone Store knows, and what to do.
func (s *Store) elsewhere() string {
	return fmt.Sprintf("another member of consumer group %s holds them (e.g. a troupe run --coordinator %s beside troupe dev), which this process does not ask: stop that process and its partitions come back here, or run every coordinator as troupe run --coordinator with --http, whose APIs merge their answers", s.t.CoordinatorGroup(), s.t.Saga)
}

// NotStartedError is the answer for an id whose trigger the coordinator
// has not seen, though other events of it came: they are orphans.
type NotStartedError struct {
	ID, Trigger string
	Orphans     int // kept; more may have come (troupe_saga_orphans_total)
}

func (e *NotStartedError) Error() string {
	what := fmt.Sprintf("%d events of %q came without its trigger %s, so it has no saga: they are orphans", e.Orphans, e.ID, e.Trigger)
	if e.Orphans == 1 {
		what = fmt.Sprintf("an event of %q came without its trigger %s, so it has no saga: it is an orphan", e.ID, e.Trigger)
	}
	return what + " (troupe saga orphans, GET /api/orphans)"
}

// Is makes a NotStartedError an ErrNotFound.
func (e *NotStartedError) Is(target error) bool { return target == ErrNotFound }

// summary is what a scan reads of a stored instance: List and Stats read
// every instance, and decoding these fields only skips building the rest.
type summary struct {
	Status    Status     `json:"status"`
	Reason    string     `json:"reason"`
	StartedAt time.Time  `json:"startedAt"`
	Orphans   []struct{} `json:"orphans"`
}

func summarize(raw []byte) summary {
	var v summary
	_ = json.Unmarshal(raw, &v)
	return v
}

// listKey orders List: newest first (by start time), then by id.
type listKey struct {
	at int64 // StartedAt, Unix ns
	id string
}

func (a listKey) before(b listKey) bool { return a.at > b.at || a.at == b.at && a.id < b.id }

func keyOf(inst *Instance) listKey { return listKey{inst.StartedAt.UnixNano(), inst.ID} }

// candidates keeps the first n keys in List order: a heap whose top is the
// last of them.
type candidates struct {
	n     int
	items []candidate
}

type candidate struct {
	k   listKey
	raw []byte
}

func (c *candidates) Len() int           { return len(c.items) }
func (c *candidates) Less(i, j int) bool { return c.items[j].k.before(c.items[i].k) }
func (c *candidates) Swap(i, j int)      { c.items[i], c.items[j] = c.items[j], c.items[i] }
func (c *candidates) Push(x any)         { c.items = append(c.items, x.(candidate)) }
func (c *candidates) Pop() any {
	x := c.items[len(c.items)-1]
	c.items = c.items[:len(c.items)-1]
	return x
}

func (c *candidates) offer(k listKey, raw []byte) {
	switch {
	case len(c.items) < c.n:
		heap.Push(c, candidate{k, bytes.Clone(raw)})
	case k.before(c.items[0].k):
		c.items[0] = candidate{k, bytes.Clone(raw)}
		heap.Fix(c, 0)
	}
}

// List returns a page of the instances of the partitions served here,
// newest first. It scans them all (as Stats does), keeping only the page.
func (s *Store) List(_ context.Context, q Query) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	from, hasFrom, err := parseCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	c := &candidates{n: limit + 1}
	for _, p := range s.rt.Partitions() {
		err := s.rt.ScanInstances(p, "", func(id string, raw []byte) (bool, error) {
			sm := summarize(raw)
			if !q.matches(id, sm) {
				return true, nil
			}
			k := listKey{sm.StartedAt.UnixNano(), id}
			if !hasFrom || from.before(k) {
				c.offer(k, raw)
			}
			return true, nil
		})
		if err != nil {
			return Page{}, err
		}
	}
	slices.SortFunc(c.items, func(a, b candidate) int {
		if a.k.before(b.k) {
			return -1
		}
		return 1
	})
	var page Page
	for _, it := range c.items[:min(limit, len(c.items))] {
		var inst Instance
		if err := json.Unmarshal(it.raw, &inst); err != nil {
			return Page{}, fmt.Errorf("stored instance %q: %w", it.k.id, err)
		}
		page.Items = append(page.Items, inst)
	}
	if len(c.items) > limit {
		page.Next = cursorOf(c.items[limit-1].k)
	}
	return page, nil
}

// matches reports whether the instance id summarised by sm is one of q's.
func (q Query) matches(id string, sm summary) bool {
	return sm.Status != "" && (q.Status == "" || sm.Status == q.Status) &&
		(q.Reason == "" || strings.EqualFold(sm.Reason, q.Reason)) &&
		(q.ID == "" || strings.Contains(id, q.ID))
}

// Stats counts the instances of the partitions served here by status, and
// their orphans, and says which partitions those are.
func (s *Store) Stats(context.Context) (Stats, error) {
	st := Stats{ByStatus: map[Status]int{}, Partitions: s.rt.Partitions()}
	due, overdue := s.overdueBefore(time.Now())
	for _, p := range st.Partitions {
		err := s.rt.ScanInstances(p, "", func(_ string, raw []byte) (bool, error) {
			sm := summarize(raw)
			if sm.Status != "" {
				st.ByStatus[sm.Status]++
			}
			if due && (sm.Status == Running || sm.Status == Compensating) && sm.StartedAt.Before(overdue) {
				st.overdue++
			}
			st.Orphans += len(sm.Orphans)
			return true, nil
		})
		if err != nil {
			return Stats{}, err
		}
	}
	if st.Partitions == nil {
		st.Partitions = []int32{}
	}
	return st, nil
}

// Orphans returns a page of the orphans kept in the partitions served
// here, in (partition, id, arrival) order; q.Status is ignored.
func (s *Store) Orphans(_ context.Context, q Query) (OrphanPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	from, err := parseOrphanCursor(q.Cursor)
	if err != nil {
		return OrphanPage{}, err
	}
	var page OrphanPage
	more := false
	take := func(id string, raw []byte, skip int) error {
		var inst Instance
		if err := json.Unmarshal(raw, &inst); err != nil {
			return fmt.Errorf("stored instance %q: %w", id, err)
		}
		for _, o := range inst.Orphans[min(skip, len(inst.Orphans)):] {
			if len(page.Items) == limit {
				more = true
				return nil
			}
			page.Items = append(page.Items, o)
		}
		return nil
	}
	for _, p := range s.rt.Partitions() {
		if p < from.p || more {
			continue
		}
		after := ""
		if p == from.p && from.id != "" {
			raw, ok, err := s.rt.ReadInstance(p, from.id)
			if err != nil {
				return OrphanPage{}, err
			}
			if ok {
				if err := take(from.id, raw, from.n); err != nil {
					return OrphanPage{}, err
				}
			}
			after = from.id
		}
		err := s.rt.ScanInstances(p, after, func(id string, raw []byte) (bool, error) {
			if more {
				return false, nil
			}
			if len(summarize(raw).Orphans) == 0 {
				return true, nil
			}
			return true, take(id, raw, 0)
		})
		if err != nil {
			return OrphanPage{}, err
		}
	}
	if more {
		page.Next = s.orphanCursor(from, page.Items)
	}
	return page, nil
}

// orphanCursor is the position after the last of items, which follow
// from: its id's partition, the id, and how many of the id's orphans are
// behind.
func (s *Store) orphanCursor(from orphanPos, items []Orphan) string {
	last := items[len(items)-1].ID
	n := 0
	if last == from.id {
		n = from.n
	}
	for _, o := range items {
		if o.ID == last {
			n++
		}
	}
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%d/%d/%s", s.Partition(last), n, last)))
}

// orphanPos is an orphan cursor: n orphans of id, in partition p, are
// behind.
type orphanPos struct {
	p  int32
	n  int
	id string
}

func parseOrphanCursor(c string) (orphanPos, error) {
	if c == "" {
		return orphanPos{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	f := strings.SplitN(string(b), "/", 3)
	if err == nil && len(f) == 3 {
		p, perr := strconv.Atoi(f[0])
		n, nerr := strconv.Atoi(f[1])
		if perr == nil && nerr == nil && p >= 0 && n >= 0 {
			return orphanPos{int32(p), n, f[2]}, nil
		}
	}
	return orphanPos{}, fmt.Errorf("%w: bad cursor %q (pass the next value of a previous page, or none)", ErrBadQuery, c)
}

// cursorOf is the position after an instance in List order.
func cursorOf(k listKey) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.at, 10) + "/" + k.id))
}

func parseCursor(c string) (listKey, bool, error) {
	if c == "" {
		return listKey{}, false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	at, id, ok := strings.Cut(string(b), "/")
	n, nerr := strconv.ParseInt(at, 10, 64)
	if err != nil || !ok || nerr != nil {
		return listKey{}, false, fmt.Errorf("%w: bad cursor %q (pass the next value of a previous page, or none)", ErrBadQuery, c)
	}
	return listKey{n, id}, true, nil
}

// overdueBefore is the start time before which an instance that has not
// ended is overdue: the saga's deadline and then the longest its
// compensation may take (every step's command sent its attempts, each
// waiting the timeout) have passed since its trigger's time, so a working
// coordinator would have ended it. A saga without a deadline has no such
// time (false).
func (s *Store) overdueBefore(now time.Time) (bool, time.Time) {
	if s.t.Deadline <= 0 {
		return false, time.Time{}
	}
	budget := s.t.Deadline
	for _, st := range s.t.Steps {
		if st.Compensation.Command != "" {
			budget += time.Duration(max(s.t.Compensate.Attempts, 1)) * s.t.Compensate.Timeout
		}
	}
	return true, now.Add(-budget)
}

// instancesCollector exports troupe_saga_instances{app,saga,status} and
// troupe_saga_overdue_instances{app,saga}: the
// instances of the partitions this process serves, counted by a scan at
// most every few seconds (a scrape of several processes sums to the saga's
// total).
type instancesCollector struct {
	s       *Store
	desc    *prometheus.Desc
	overdue *prometheus.Desc
	// every bounds how often a scrape scans the store.
	every time.Duration
}

// Collector returns the collector of troupe_saga_instances for s; register
// it with the process's registry.
func (s *Store) Collector() prometheus.Collector {
	return &instancesCollector{s: s, every: 5 * time.Second, desc: prometheus.NewDesc(
		prometheus.BuildFQName(metrics.Namespace, "saga", "instances"),
		"Saga instances in the partitions this process serves, by status (sum over the coordinator processes).",
		[]string{"status"}, prometheus.Labels{"app": s.t.App, "saga": s.t.Saga}),
		overdue: prometheus.NewDesc(prometheus.BuildFQName(metrics.Namespace, "saga", "overdue_instances"),
			"Instances not ended (RUNNING or COMPENSATING) although their deadline and the longest their compensation may take have passed since their trigger's time: stuck (the coordinator down, behind, or not holding their partition). Always 0 for a saga without a deadline.",
			nil, prometheus.Labels{"app": s.t.App, "saga": s.t.Saga})}
}

func (c *instancesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.overdue
}

func (c *instancesCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	if time.Since(c.s.cachedAt) >= c.every {
		if st, err := c.s.Stats(context.Background()); err == nil {
			c.s.cached, c.s.cachedAt = st, time.Now()
		}
	}
	st := c.s.cached
	c.s.mu.Unlock()
	for _, status := range []Status{Running, Completed, Compensating, Compensated, Failed} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.ByStatus[status]), string(status))
	}
	ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, float64(st.overdue))
}
