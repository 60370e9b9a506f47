package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"golang.org/x/sync/errgroup"
)

// clientIDPrefix starts the Kafka client id of a coordinator process that
// serves the saga API; the rest is the base URL of its API. The group's
// description (members, their client ids and partitions) is then a map of
// partitions to the processes that answer for them: no other registry of
// peers is needed.
const clientIDPrefix = "troupe-saga@"

// ClientID is the Kafka client id a coordinator process serving the saga
// API at baseURL (e.g. http://10.0.0.7:8090) uses, so that its peers find
// it.
func ClientID(baseURL string) string { return clientIDPrefix + strings.TrimRight(baseURL, "/") }

// baseURLOf reads the base URL back from a client id; "" if it has none.
func baseURLOf(clientID string) string {
	u, _ := strings.CutPrefix(clientID, clientIDPrefix)
	if u == clientID {
		return ""
	}
	return u
}

// Cluster is the saga API of a coordinator that may be one of several
// processes of its group. Each process serves the partitions it holds
// (Store); Cluster learns from the group's description which process holds
// which partition, reading each member's API address from its client id
// (ClientID), and then:
//
//   - Owner (the Locator) names the process of an instance's partition, for
//     the 307 of GET /api/sagas/{id};
//   - Stats and List ask every peer for its own partitions (scope=local) and
//     merge the answers. A whole answer covers every partition exactly once:
//     while a partition is moving or restoring, or a peer does not answer,
//     they fail with ErrUnavailable (503) rather than count wrong.
type Cluster struct {
	local  *Store
	self   string
	group  string
	adm    *kadm.Client
	client *http.Client

	mu       sync.Mutex
	owners   map[int32]string // partition → base URL of its process ("" if it has none)
	loadedAt time.Time
	loadErr  error
}

// ownersTTL is how long a description of the group is trusted.
const ownersTTL = 2 * time.Second

// NewCluster serves the saga API of the coordinator read by local, whose own
// API is at self (the URL in its ClientID), in consumer group group, which
// adm describes.
func NewCluster(local *Store, self, group string, adm *kadm.Client) *Cluster {
	return &Cluster{
		local: local, self: strings.TrimRight(self, "/"), group: group, adm: adm,
		client: &http.Client{Timeout: 5 * time.Second},
	}
}

// Local is this process's Store.
func (c *Cluster) Local() Reader { return c.local }

// Owner names the process serving instance id's partition.
func (c *Cluster) Owner(id string) (string, bool) {
	p := c.local.Partition(id)
	if c.local.Serves(p) {
		return "", true
	}
	owners, _ := c.ownersOf(context.Background())
	if u := owners[p]; u != c.self {
		return u, false
	}
	return "", false
}

// Instance reads instance id from this process (the API redirects to the
// owner first when it knows it).
func (c *Cluster) Instance(ctx context.Context, id string) (*Instance, error) {
	return c.local.Instance(ctx, id)
}

// ownersOf describes the group, at most every ownersTTL.
func (c *Cluster) ownersOf(ctx context.Context) (map[int32]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.loadedAt) < ownersTTL {
		return c.owners, c.loadErr
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c.owners, c.loadErr = describe(ctx, c.adm, c.group)
	c.loadedAt = time.Now()
	return c.owners, c.loadErr
}

// describe maps the partitions of group to the base URLs of their members:
// with the KIP-848 consumer protocol first, else the classic one.
func describe(ctx context.Context, adm *kadm.Client, group string) (map[int32]string, error) {
	owners := map[int32]string{}
	add := func(clientID string, topics map[string][]int32) {
		for _, ps := range topics {
			for _, p := range ps {
				owners[p] = baseURLOf(clientID)
			}
		}
	}
	cgs, err := adm.DescribeConsumerGroups(ctx, group)
	if g, ok := cgs[group]; err == nil && ok && g.Err == nil && len(g.Members) > 0 {
		for _, m := range g.Members {
			tps := map[string][]int32{}
			for t, ps := range m.Assignment {
				for p := range ps {
					tps[t] = append(tps[t], p)
				}
			}
			add(m.ClientID, tps)
		}
		return owners, nil
	}
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return owners, fmt.Errorf("describe group %s: %w", group, err)
	}
	g, ok := gs[group]
	if !ok || g.Err != nil {
		return owners, fmt.Errorf("describe group %s: %v", group, g.Err)
	}
	for _, m := range g.Members {
		if a, ok := m.Assigned.AsConsumer(); ok {
			tps := map[string][]int32{}
			for _, t := range a.Topics {
				tps[t.Topic] = t.Partitions
			}
			add(m.ClientID, tps)
		}
	}
	return owners, nil
}

// answer is one process's part of a merged answer.
type answer[T any] struct {
	url string // "" for this process
	v   T
}

// gather runs local and, for each peer that serves a partition this process
// does not, remote, concurrently.
func gather[T any](ctx context.Context, c *Cluster, local func() (T, error), remote func(base string) (T, error)) ([]answer[T], error) {
	mine := c.local.rt.Partitions()
	var peers []string
	if len(mine) < int(c.local.Partitions()) {
		owners, err := c.ownersOf(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot tell which coordinator serves which partition: %v", ErrUnavailable, err)
		}
		for p, u := range owners {
			if slices.Contains(mine, p) || u == c.self {
				continue
			}
			if u == "" {
				return nil, fmt.Errorf("%w: partition %d is held by a coordinator that does not advertise its API (run it with --http and, on 0.0.0.0, --advertise-http)", ErrUnavailable, p)
			}
			if !slices.Contains(peers, u) {
				peers = append(peers, u)
			}
		}
	}
	out := make([]answer[T], 1+len(peers))
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		v, err := local()
		out[0] = answer[T]{v: v}
		return err
	})
	for i, u := range peers {
		eg.Go(func() error {
			v, err := remote(u)
			if err != nil {
				return fmt.Errorf("%w: coordinator %s: %v", ErrUnavailable, u, err)
			}
			out[1+i] = answer[T]{url: u, v: v}
			return nil
		})
	}
	return out, eg.Wait()
}

// Stats counts the instances of every partition, each from the process
// that serves it.
func (c *Cluster) Stats(ctx context.Context) (Stats, error) {
	answers, err := gather(ctx, c, func() (Stats, error) { return c.local.Stats(ctx) }, func(u string) (Stats, error) {
		var st Stats
		return st, c.get(ctx, u+"/api/sagas/stats?scope=local", &st)
	})
	if err != nil {
		return Stats{}, err
	}
	total := Stats{ByStatus: map[Status]int{}}
	seen := map[int32]string{}
	for _, a := range answers {
		for _, p := range a.v.Partitions {
			if other, dup := seen[p]; dup {
				return Stats{}, fmt.Errorf("%w: partition %d counted by %s and %s (a rebalance is under way)", ErrUnavailable, p, name(other), name(a.url))
			}
			seen[p] = a.url
		}
		for s, n := range a.v.ByStatus {
			total.ByStatus[s] += n
		}
	}
	var missing []int32
	for p := range c.local.Partitions() {
		if _, ok := seen[p]; !ok {
			missing = append(missing, p)
		}
		total.Partitions = append(total.Partitions, p)
	}
	if len(missing) > 0 {
		return Stats{}, fmt.Errorf("%w: partitions %v are served by no coordinator right now (restoring, moving, or no coordinator running for them)", ErrUnavailable, missing)
	}
	return total, nil
}

// List merges a page of every process: each returns its first q.Limit
// instances after the cursor in (partition, id) order, so the first q.Limit
// of the merge are the first of all.
func (c *Cluster) List(ctx context.Context, q Query) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	if _, _, err := parseCursor(q.Cursor); err != nil {
		return Page{}, err
	}
	answers, err := gather(ctx, c, func() (Page, error) { return c.local.List(ctx, q) }, func(u string) (Page, error) {
		v := url.Values{"scope": {"local"}, "limit": {strconv.Itoa(q.Limit)}}
		if q.Status != "" {
			v.Set("status", string(q.Status))
		}
		if q.Cursor != "" {
			v.Set("cursor", q.Cursor)
		}
		var page Page
		return page, c.get(ctx, u+"/api/sagas?"+v.Encode(), &page)
	})
	if err != nil {
		return Page{}, err
	}
	var all Page
	more := false
	for _, a := range answers {
		all.Items = append(all.Items, a.v.Items...)
		more = more || a.v.Next != ""
	}
	sort.Slice(all.Items, func(i, j int) bool {
		pi, pj := c.local.Partition(all.Items[i].ID), c.local.Partition(all.Items[j].ID)
		if pi != pj {
			return pi < pj
		}
		return all.Items[i].ID < all.Items[j].ID
	})
	if len(all.Items) > q.Limit {
		all.Items, more = all.Items[:q.Limit], true
	}
	if more && len(all.Items) > 0 {
		all.Next = c.local.cursor(all.Items[len(all.Items)-1].ID)
	}
	return all, nil
}

func (c *Cluster) get(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("answered %s", resp.Status)
	}
	return json.Unmarshal(body, v)
}

func name(u string) string {
	if u == "" {
		return "this process"
	}
	return u
}
