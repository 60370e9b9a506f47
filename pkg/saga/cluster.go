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
//   - Stats, List and Orphans ask every peer for its own partitions
//     (scope=local) and merge the answers. A whole answer covers every
//     partition exactly once: while a partition is moving or restoring, or
//     a peer does not answer or advertises no API, they fail with
//     ErrUnavailable (503), naming the peer and the fix, rather than count
//     wrong.
type Cluster struct {
	local  *Store
	self   string
	group  string
	adm    *kadm.Client
	client *http.Client
	token  string // sent to the peers' APIs

	mu       sync.Mutex
	owners   map[int32]member // partition → the group member that holds it
	loadedAt time.Time
	loadErr  error
}

// member is a member of the coordinator's group, as its description says.
type member struct {
	url      string // base URL of its saga API; "" if it advertises none
	clientID string
	host     string
}

// String names the member for an error message.
func (m member) String() string {
	if m.url != "" {
		return m.url
	}
	return fmt.Sprintf("the member with client id %q on host %s", m.clientID, strings.TrimPrefix(m.host, "/"))
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

// SendToken makes the cluster send token (package auth) to its peers'
// APIs, which require the same one. Call it before serving.
func (c *Cluster) SendToken(token string) { c.token = token }

// Local is this process's Store.
func (c *Cluster) Local() Reader { return c.local }

// Owner names the process serving instance id's partition.
func (c *Cluster) Owner(id string) (string, bool) {
	p := c.local.Partition(id)
	if c.local.Serves(p) {
		return "", true
	}
	owners, _ := c.ownersOf(context.Background())
	if u := owners[p].url; u != c.self {
		return u, false
	}
	return "", false
}

// Instance reads instance id from this process (the API redirects to the
// owner first when it knows it). When another member holds its partition
// but cannot be redirected to, the error names it and what to do.
func (c *Cluster) Instance(ctx context.Context, id string) (*Instance, error) {
	inst, err := c.local.Instance(ctx, id)
	if !errors.Is(err, ErrNotServed) {
		return inst, err
	}
	p := c.local.Partition(id)
	owners, oerr := c.ownersOf(ctx)
	m, held := owners[p]
	switch {
	case oerr != nil:
		return nil, fmt.Errorf("instance %q is in partition %d, not served here, and %w: cannot tell which coordinator serves it: %v", id, p, ErrUnavailable, oerr)
	case !held:
		return nil, fmt.Errorf("instance %q is in partition %d, which %w: no member of group %s holds it now (a rebalance or a restore: retry in a moment; if it lasts, is a coordinator running?)", id, p, ErrUnavailable, c.group)
	case m.url == "":
		return nil, fmt.Errorf("instance %q is in partition %d (%w), %s", id, p, ErrUnavailable, c.unadvertised(m))
	}
	return nil, fmt.Errorf("instance %q is in partition %d: %w (its owner %s has just taken it: retry in a moment)", id, p, ErrNotServed, m.url)
}

// unadvertised says what to do about a member that holds partitions but
// does not advertise its API.
func (c *Cluster) unadvertised(m member) string {
	return fmt.Sprintf("held by %s, which does not advertise a saga API, so its instances cannot be read from here: "+
		"run every coordinator of group %s as troupe run --coordinator with --http (and --advertise-http when it listens on 0.0.0.0), or stop that one (a troupe dev or an older troupe?) so that its partitions move to coordinators that do", m, c.group)
}

// ownersOf describes the group, at most every ownersTTL.
func (c *Cluster) ownersOf(ctx context.Context) (map[int32]member, error) {
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
func describe(ctx context.Context, adm *kadm.Client, group string) (map[int32]member, error) {
	owners := map[int32]member{}
	add := func(clientID, host string, topics map[string][]int32) {
		for _, ps := range topics {
			for _, p := range ps {
				owners[p] = member{url: baseURLOf(clientID), clientID: clientID, host: host}
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
			add(m.ClientID, m.ClientHost, tps)
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
			add(m.ClientID, m.ClientHost, tps)
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
	served := map[string][]int32{} // peer → its partitions, for errors
	if len(mine) < int(c.local.Partitions()) {
		owners, err := c.ownersOf(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot tell which coordinator serves which partition: %v", ErrUnavailable, err)
		}
		for p, m := range owners {
			if slices.Contains(mine, p) || m.url == c.self {
				continue
			}
			if m.url == "" {
				return nil, fmt.Errorf("%w: partition %d is %s", ErrUnavailable, p, c.unadvertised(m))
			}
			if !slices.Contains(peers, m.url) {
				peers = append(peers, m.url)
			}
			served[m.url] = append(served[m.url], p)
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
				ps := served[u]
				slices.Sort(ps)
				return fmt.Errorf("%w: coordinator %s, which serves partitions %v, did not answer: %v "+
					"(is it up? its --http must be reachable from here at that address: when it listens on 0.0.0.0 or behind NAT, set its --advertise-http to one its peers can reach)", ErrUnavailable, u, ps, err)
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
		total.Orphans += a.v.Orphans
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
// instances after the cursor, newest first, so the first q.Limit of the
// merge are the first of all.
func (c *Cluster) List(ctx context.Context, q Query) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	if _, _, err := parseCursor(q.Cursor); err != nil {
		return Page{}, err
	}
	answers, err := gather(ctx, c, func() (Page, error) { return c.local.List(ctx, q) }, func(u string) (Page, error) {
		v := url.Values{"scope": {"local"}, "limit": {strconv.Itoa(q.Limit)}}
		for k, x := range map[string]string{"status": string(q.Status), "reason": q.Reason, "id": q.ID, "cursor": q.Cursor} {
			if x != "" {
				v.Set(k, x)
			}
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
	sort.Slice(all.Items, func(i, j int) bool { return keyOf(&all.Items[i]).before(keyOf(&all.Items[j])) })
	if len(all.Items) > q.Limit {
		all.Items, more = all.Items[:q.Limit], true
	}
	if more && len(all.Items) > 0 {
		all.Next = cursorOf(keyOf(&all.Items[len(all.Items)-1]))
	}
	return all, nil
}

// Orphans merges a page of orphans of every process, as List does, in
// (partition, id, arrival) order.
func (c *Cluster) Orphans(ctx context.Context, q Query) (OrphanPage, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	from, err := parseOrphanCursor(q.Cursor)
	if err != nil {
		return OrphanPage{}, err
	}
	answers, err := gather(ctx, c, func() (OrphanPage, error) { return c.local.Orphans(ctx, q) }, func(u string) (OrphanPage, error) {
		v := url.Values{"scope": {"local"}, "limit": {strconv.Itoa(q.Limit)}}
		if q.Cursor != "" {
			v.Set("cursor", q.Cursor)
		}
		var page OrphanPage
		return page, c.get(ctx, u+"/api/orphans?"+v.Encode(), &page)
	})
	if err != nil {
		return OrphanPage{}, err
	}
	var all OrphanPage
	more := false
	for _, a := range answers {
		all.Items = append(all.Items, a.v.Items...)
		more = more || a.v.Next != ""
	}
	// Each process's items are in order and the processes' partitions
	// disjoint: a stable sort by partition, then id, keeps each id's
	// orphans in arrival order.
	sort.SliceStable(all.Items, func(i, j int) bool {
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
		all.Next = c.local.orphanCursor(from, all.Items)
	}
	return all, nil
}

func (c *Cluster) get(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
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
