package saga

import (
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
// committed transaction applied). Instances are listed in (partition, id)
// order, which a cursor remembers, so that pages from several processes
// merge into one order (Cluster).
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

// Instance returns instance id if its partition is served here.
func (s *Store) Instance(_ context.Context, id string) (*Instance, error) {
	p := s.Partition(id)
	if !s.Serves(p) {
		return nil, fmt.Errorf("instance %q is in partition %d: %w", id, p, ErrNotServed)
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
	return &inst, nil
}

// List returns a page of the instances of the partitions served here.
func (s *Store) List(_ context.Context, q Query) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	from, after, err := parseCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	var page Page
	more := false
	for _, p := range s.rt.Partitions() {
		if p < from || more {
			continue
		}
		start := ""
		if p == from {
			start = after
		}
		err := s.rt.ScanInstances(p, start, func(id string, raw []byte) (bool, error) {
			if q.Status != "" && statusOf(raw) != q.Status {
				return true, nil
			}
			if len(page.Items) == limit {
				more = true
				return false, nil
			}
			var inst Instance
			if err := json.Unmarshal(raw, &inst); err != nil {
				return false, fmt.Errorf("stored instance %q: %w", id, err)
			}
			page.Items = append(page.Items, inst)
			return true, nil
		})
		if err != nil {
			return Page{}, err
		}
	}
	if more {
		page.Next = s.cursor(page.Items[len(page.Items)-1].ID)
	}
	return page, nil
}

// Stats counts the instances of the partitions served here by status, and
// says which partitions those are.
func (s *Store) Stats(context.Context) (Stats, error) {
	st := Stats{ByStatus: map[Status]int{}, Partitions: s.rt.Partitions()}
	for _, p := range st.Partitions {
		err := s.rt.ScanInstances(p, "", func(_ string, raw []byte) (bool, error) {
			st.ByStatus[statusOf(raw)]++
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

// statusOf reads only the status of a stored instance: Stats reads every
// instance, and decoding only one field skips building the rest.
func statusOf(raw []byte) Status {
	var v struct {
		Status Status `json:"status"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.Status
}

// cursor is the position after instance id: its partition and id.
func (s *Store) cursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(int(s.Partition(id))) + "/" + id))
}

func parseCursor(c string) (int32, string, error) {
	if c == "" {
		return 0, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	ps, id, ok := strings.Cut(string(b), "/")
	p, perr := strconv.Atoi(ps)
	if err != nil || !ok || perr != nil || p < 0 {
		return 0, "", fmt.Errorf("%w: bad cursor %q (pass the next value of a previous page, or none)", ErrBadQuery, c)
	}
	return int32(p), id, nil
}

// instancesCollector exports troupe_saga_instances{app,saga,status}: the
// instances of the partitions this process serves, counted by a scan at
// most every few seconds (a scrape of several processes sums to the saga's
// total).
type instancesCollector struct {
	s    *Store
	desc *prometheus.Desc
	// every bounds how often a scrape scans the store.
	every time.Duration
}

// Collector returns the collector of troupe_saga_instances for s; register
// it with the process's registry.
func (s *Store) Collector() prometheus.Collector {
	return &instancesCollector{s: s, every: 5 * time.Second, desc: prometheus.NewDesc(
		prometheus.BuildFQName(metrics.Namespace, "saga", "instances"),
		"Saga instances in the partitions this process serves, by status (sum over the coordinator processes).",
		[]string{"status"}, prometheus.Labels{"app": s.t.App, "saga": s.t.Saga})}
}

func (c *instancesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

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
}
