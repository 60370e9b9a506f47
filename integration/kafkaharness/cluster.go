package kafkaharness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Options configures [Start]. The zero value starts one real broker in a
// temporary directory.
type Options struct {
	// Brokers is the number of nodes, each a combined broker and KRaft
	// controller; all nodes are voters of a static quorum. Default 1. With 3,
	// topics default to replication factor 3 and min.insync.replicas 2, so
	// the cluster survives one dead node.
	Brokers int

	// Dir holds each node's server.properties, data and server.log; it must
	// be empty or absent. Default: a new temporary directory that Stop
	// removes. A Dir you give is kept, logs included.
	Dir string

	// Logger receives the harness's own progress lines (fetch, start, stop),
	// not the broker logs (see Cluster.LogTail). Default: discarded.
	Logger io.Writer

	// Config adds or overrides server.properties keys on every node, e.g.
	// {"auto.create.topics.enable": "false"}.
	Config map[string]string

	// JavaOpts replaces the default JVM flags (-Xms256m -Xmx512m, G1 with
	// 20 ms pauses).
	JavaOpts []string

	// StartTimeout bounds the wait for the nodes to serve metadata, in Start
	// and StartBroker. Default 90 s.
	StartTimeout time.Duration

	// StopTimeout is how long Stop and StopBroker wait after SIGTERM before
	// SIGKILL. Default 15 s.
	StopTimeout time.Duration

	// Listener is how clients connect: ListenerPlaintext (the default),
	// ListenerSASLSSL or ListenerMTLS. A secured cluster makes a CA at
	// start (see Cluster.CA) that signs each broker's certificate, for
	// 127.0.0.1 and localhost; brokers talk among themselves on a
	// PLAINTEXT listener of their own, which Addrs does not list.
	Listener string

	// SCRAMUsers are SCRAM-SHA-512 credentials, user name to password,
	// that the storage format writes into the cluster metadata (kafka-storage
	// format --add-scram), so they exist before the first start.
	// ListenerSASLSSL needs at least one. Names and passwords are letters,
	// digits and ._- only.
	SCRAMUsers map[string]string

	// Fake runs franz-go's in-process kfake cluster instead of Apache Kafka:
	// no JVM, starts in milliseconds, but it is a reimplementation, not the
	// real broker. Dir, Config and JavaOpts are ignored; Listener must be
	// plaintext.
	Fake bool
}

// Cluster is a running Kafka cluster started by [Start]. Its methods are safe
// for concurrent use. Node indexes are 0-based; the real nodes' node.id is
// index+1 (see NodeID).
type Cluster struct {
	opts   Options
	log    io.Writer
	dir    string
	ownDir bool
	java   string
	libs   string
	log4j  string
	ca     *CA // of a secured cluster

	// Class data sharing: cdsArchive is the archive every JVM maps if it
	// exists; otherwise the first node to start writes cdsDump when it exits
	// cleanly, and Stop adopts it as the archive.
	cdsArchive string
	cdsDump    string

	mu    sync.Mutex // serialises node starts and stops
	nodes []*node

	fake      *kfake.Cluster
	fakeAddrs []string
	fakeIDs   []int32
	fakeDown  []bool

	stopOnce sync.Once
}

// node is one Kafka process.
type node struct {
	id    int
	ports nodePorts
	dir   string

	// Set while the process runs; exited closes when Wait returns.
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	dumps   bool // this run writes the CDS archive at exit
}

func (n *node) addr() string { return "127.0.0.1:" + strconv.Itoa(n.ports.broker) }

// readyAddr is where the harness checks the node: a secured node's
// plaintext internal listener.
func (n *node) readyAddr() string {
	if n.ports.internal != 0 {
		return "127.0.0.1:" + strconv.Itoa(n.ports.internal)
	}
	return n.addr()
}

func (n *node) logPath() string   { return filepath.Join(n.dir, "server.log") }
func (n *node) propsPath() string { return filepath.Join(n.dir, "server.properties") }
func (n *node) running() bool     { return n.cmd != nil && !n.hasExited() }
func (n *node) hasExited() bool   { return n.exited != nil && isClosed(n.exited) }
func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

const (
	tempPrefix = "troupe-kafka-"
	ownerFile  = "owner.pid"
)

// sweepStaleDirs removes temporary cluster dirs left by test processes that
// died without Stop (killed, or timed out by go test); their JVMs died with
// them.
func sweepStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// live holds the clusters of this process that are not stopped yet, for
// Main's signal handler.
var live liveSet

type liveSet struct {
	mu sync.Mutex
	cs map[*Cluster]bool
}

func (l *liveSet) add(c *Cluster) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cs == nil {
		l.cs = map[*Cluster]bool{}
	}
	l.cs[c] = true
}

func (l *liveSet) remove(c *Cluster) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.cs, c)
}

// stopAll stops every live cluster at once.
func (l *liveSet) stopAll() {
	l.mu.Lock()
	cs := make([]*Cluster, 0, len(l.cs))
	for c := range l.cs {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(c.Stop)
	}
	wg.Wait()
}

// errPortTaken marks a start that lost a race for a port it had found free.
var errPortTaken = errors.New("a listener port was taken by another process")

// Start starts a Kafka cluster as opts describes and returns once every node
// answers metadata requests listing all nodes. On error nothing is left
// running. The nodes outlive ctx; call Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Brokers == 0 {
		opts.Brokers = 1
	}
	if opts.Brokers < 1 || opts.Brokers > 5 {
		return nil, fmt.Errorf("kafkaharness: Brokers is %d, want 1 to 5 (1 or 3 is usual)", opts.Brokers)
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 90 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 15 * time.Second
	}
	if opts.JavaOpts == nil {
		opts.JavaOpts = defaultJavaOpts
	}
	logw := opts.Logger
	if logw == nil {
		logw = io.Discard
	}
	if err := checkSecurity(opts); err != nil {
		return nil, err
	}
	if opts.Fake {
		return startFake(opts, logw)
	}

	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("%w: java is not on PATH, needed to run the Kafka broker (%s)", ErrToolMissing, installHint)
	}
	libs, err := Fetch(ctx, logw)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		c, err := startReal(ctx, opts, logw, java, libs)
		if err == nil {
			live.add(c)
		}
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 3 {
			return c, err
		}
		fmt.Fprintf(logw, "kafkaharness: %v; retrying with new ports\n", err)
		if opts.Dir != "" {
			if err := clearDir(opts.Dir); err != nil {
				return nil, err
			}
		}
	}
}

func startReal(ctx context.Context, opts Options, logw io.Writer, java, libs string) (*Cluster, error) {
	begin := time.Now()
	c := &Cluster{opts: opts, log: logw, dir: opts.Dir, java: java, libs: libs}
	c.cdsArchive = cdsArchivePath(java, libs)
	if c.dir == "" {
		sweepStaleDirs()
		d, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return nil, fmt.Errorf("kafkaharness: %w", err)
		}
		c.dir, c.ownDir = d, true
		// Lets a later run remove this dir if this process dies without Stop.
		_ = os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
	} else {
		if ents, err := os.ReadDir(c.dir); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("kafkaharness: Dir %s is not empty (it must be empty or absent: each Start formats a new cluster)", c.dir)
		}
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return nil, fmt.Errorf("kafkaharness: %w", err)
		}
	}
	fail := func(err error) (*Cluster, error) {
		c.Stop()
		return nil, err
	}

	n := opts.Brokers
	per := 2
	if secured(opts.Listener) {
		per = 3
	}
	raw, err := freePorts(per * n)
	if err != nil {
		return fail(err)
	}
	ports := make([]nodePorts, n)
	for i := range ports {
		ports[i] = nodePorts{broker: raw[per*i], controller: raw[per*i+1]}
		if per == 3 {
			ports[i].internal = raw[per*i+2]
		}
	}
	if secured(opts.Listener) {
		if c.ca, err = NewCA(filepath.Join(c.dir, "tls"), "kafkaharness"); err != nil {
			return fail(err)
		}
	}
	clusterID, err := newClusterID()
	if err != nil {
		return fail(err)
	}
	c.log4j = filepath.Join(c.dir, "log4j2.properties")
	if err := os.WriteFile(c.log4j, []byte(log4jConfig), 0o644); err != nil {
		return fail(fmt.Errorf("kafkaharness: %w", err))
	}
	for i := range n {
		nd := &node{id: i + 1, ports: ports[i], dir: filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1))}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			return fail(fmt.Errorf("kafkaharness: %w", err))
		}
		var ks, ts string
		if c.ca != nil {
			cert, key, err := c.ca.Issue(fmt.Sprintf("broker-%d", nd.id), "127.0.0.1", "localhost")
			if err != nil {
				return fail(err)
			}
			ks, ts = filepath.Join(nd.dir, "keystore.pem"), c.ca.CertFile
			if err := keystore(ks, cert, key); err != nil {
				return fail(err)
			}
		}
		listeners := listenerProperties(opts.Listener, ports[i], ks, ts)
		props := serverProperties(nd.id, ports, listeners, filepath.Join(nd.dir, "data"), opts.Config)
		if err := os.WriteFile(nd.propsPath(), []byte(props), 0o644); err != nil {
			return fail(fmt.Errorf("kafkaharness: %w", err))
		}
		c.nodes = append(c.nodes, nd)
	}

	// Format all nodes at once: each is a JVM start (~1 s), and they do not
	// depend on each other.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range c.nodes {
		wg.Go(func() { errs[i] = c.format(ctx, nd, clusterID) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	formatted := time.Since(begin)

	c.mu.Lock()
	for _, nd := range c.nodes {
		if err = c.startNode(nd); err != nil {
			break
		}
	}
	c.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	if err := c.waitReady(ctx, c.nodes); err != nil {
		return fail(err)
	}
	c.checkArchive()
	fmt.Fprintf(logw, "kafkaharness: Apache Kafka (%d node(s)) ready at %s in %s (format %s), dir %s\n",
		n, strings.Join(c.Addrs(), ","), time.Since(begin).Round(10*time.Millisecond), formatted.Round(10*time.Millisecond), c.dir)
	return c, nil
}

// clearDir empties dir for another attempt.
func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("kafkaharness: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("kafkaharness: %w", err)
		}
	}
	return nil
}

// format runs the storage tool for one node. With controller.quorum.voters
// set (a static quorum) it takes no quorum flag.
func (c *Cluster) format(ctx context.Context, nd *node, clusterID string) error {
	args := []string{"-Xmx256m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"}
	if fileExists(c.cdsArchive) {
		args = append(args, "-XX:SharedArchiveFile="+c.cdsArchive)
	}
	args = append(args,
		"-Dlog4j2.configurationFile="+c.log4j,
		"-cp", filepath.Join(c.libs, "*"),
		"kafka.tools.StorageTool", "format", "-t", clusterID, "-c", nd.propsPath())
	for _, u := range sortedKeys(c.opts.SCRAMUsers) {
		args = append(args, "--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", u, c.opts.SCRAMUsers[u]))
	}
	cmd := exec.CommandContext(ctx, c.java, args...)
	cmd.Dir = nd.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kafkaharness: format node %d storage: %w\n%s", nd.id, err, tail(out.String(), 30))
	}
	return nil
}

// startNode starts nd's JVM, appending its output to server.log. c.mu must
// be held.
func (c *Cluster) startNode(nd *node) error {
	f, err := os.OpenFile(nd.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kafkaharness: %w", err)
	}
	defer f.Close() // the child has its own descriptor
	fmt.Fprintf(f, "==== kafkaharness: starting node %d (%s) at %s ====\n", nd.id, nd.addr(), time.Now().Format(time.RFC3339Nano))

	args := append([]string(nil), c.opts.JavaOpts...)
	dumps := false
	switch {
	case fileExists(c.cdsArchive):
		args = append(args, "-XX:SharedArchiveFile="+c.cdsArchive)
	case c.cdsDump == "" && c.cdsArchive != "":
		c.cdsDump = fmt.Sprintf("%s.%d.tmp", c.cdsArchive, os.Getpid())
		args = append(args, "-XX:ArchiveClassesAtExit="+c.cdsDump)
		dumps = true
	}
	args = append(args,
		"-Dlog4j2.configurationFile="+c.log4j,
		"-cp", filepath.Join(c.libs, "*"), // Java expands the quoted wildcard
		"kafka.Kafka", nd.propsPath())
	cmd := exec.Command(c.java, args...)
	cmd.Dir = nd.dir // where a crashing JVM drops hs_err_pid*.log
	cmd.Stdout, cmd.Stderr = f, f
	if err := StartChild(cmd); err != nil {
		return fmt.Errorf("kafkaharness: start node %d: %w", nd.id, err)
	}
	exited := make(chan struct{})
	nd.cmd, nd.exited, nd.waitErr, nd.dumps = cmd, exited, nil, dumps
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		nd.waitErr = err
		c.mu.Unlock()
		close(exited)
	}()
	return nil
}

// waitReady polls until every node in want answers a metadata request of its
// own that lists all of want. A broker serves clients only once the
// controller has unfenced it, so this also means it is registered.
func (c *Cluster) waitReady(ctx context.Context, want []*node) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()

	clients := make([]*kgo.Client, len(want))
	for i, nd := range want {
		cl, err := kgo.NewClient(kgo.SeedBrokers(nd.readyAddr()), kgo.DialTimeout(time.Second))
		if err != nil {
			return fmt.Errorf("kafkaharness: %w", err)
		}
		defer cl.Close()
		clients[i] = cl
	}
	ready := make([]bool, len(want))
	var last error
	for {
		all := true
		for i, nd := range want {
			if ready[i] {
				continue
			}
			c.mu.Lock()
			exited, werr := nd.hasExited(), nd.waitErr
			c.mu.Unlock()
			if exited {
				err := fmt.Errorf("kafkaharness: node %d exited during start (%v)\n%s", nd.id, werr, c.nodeTail(nd, 40))
				if strings.Contains(c.nodeTail(nd, 200), "Address already in use") {
					err = fmt.Errorf("%w: %w", errPortTaken, err)
				}
				return err
			}
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			ready[i], last = c.answers(rctx, clients[i], want)
			rcancel()
			all = all && ready[i]
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkaharness: Kafka not ready after %s (last: %v)\n%s", c.opts.StartTimeout, last, c.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// answers reports whether the seed broker of cl answers a metadata request
// listing every node of want.
func (c *Cluster) answers(ctx context.Context, cl *kgo.Client, want []*node) (bool, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // no topics, just brokers
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		return false, err
	}
	listed := map[int32]bool{}
	for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
		listed[b.NodeID] = true
	}
	for _, nd := range want {
		if !listed[int32(nd.id)] {
			return false, fmt.Errorf("metadata lists %d broker(s), node %d missing", len(listed), nd.id)
		}
	}
	return true, nil
}

// Addrs returns every node's client address (host:port), stopped nodes
// included, in node order.
func (c *Cluster) Addrs() []string {
	if c.fake != nil {
		return append([]string(nil), c.fakeAddrs...)
	}
	addrs := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		addrs[i] = nd.addr()
	}
	return addrs
}

// NodeID returns the Kafka node.id of node index i (i+1 for Apache Kafka,
// kfake's own numbering for a fake cluster), to match against partition
// leaders in metadata.
func (c *Cluster) NodeID(i int) int32 {
	if c.fake != nil {
		return c.fakeIDs[i]
	}
	return int32(c.nodes[i].id)
}

// CA is the authority that signed the brokers' certificates of a secured
// cluster (nil for a plaintext one): trust its CertFile, and Issue client
// certificates with it for ListenerMTLS.
func (c *Cluster) CA() *CA { return c.ca }

// Dir is the directory holding the nodes' configs, data and logs ("" for a
// fake cluster).
func (c *Cluster) Dir() string { return c.dir }

// Fake reports whether this is kfake rather than Apache Kafka.
func (c *Cluster) Fake() bool { return c.fake != nil }

func (c *Cluster) node(i int) (*node, error) {
	n := len(c.nodes)
	if c.fake != nil {
		n = len(c.fakeAddrs)
	}
	if i < 0 || i >= n {
		return nil, fmt.Errorf("kafkaharness: no node %d (cluster has %d)", i, n)
	}
	if c.fake != nil {
		return nil, nil
	}
	return c.nodes[i], nil
}

// StopBroker shuts node i down cleanly (SIGTERM, then SIGKILL after
// StopTimeout) and waits for it to exit. Stopping a stopped node does
// nothing.
func (c *Cluster) StopBroker(i int) error { return c.down(i, false) }

// KillBroker kills node i with SIGKILL, as a crash would, and waits for it
// to exit. Killing a stopped node does nothing.
func (c *Cluster) KillBroker(i int) error { return c.down(i, true) }

func (c *Cluster) down(i int, kill bool) error {
	nd, err := c.node(i)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.fake != nil {
		defer c.mu.Unlock()
		if c.fakeDown[i] {
			return nil
		}
		if err := c.fake.RemoveNode(c.fakeIDs[i]); err != nil {
			return fmt.Errorf("kafkaharness: kfake remove node %d: %w", c.fakeIDs[i], err)
		}
		c.fakeDown[i] = true
		return nil
	}
	running := nd.running()
	c.mu.Unlock()
	if !running {
		return nil
	}
	how := "stop"
	if kill {
		how = "kill"
	}
	fmt.Fprintf(c.log, "kafkaharness: %s node %d\n", how, nd.id)
	c.signalAndWait(nd, kill)
	return nil
}

// signalAndWait ends nd's process; it must not hold c.mu (the Wait
// goroutine takes it).
func (c *Cluster) signalAndWait(nd *node, kill bool) {
	pid := nd.cmd.Process.Pid
	if !kill {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-nd.exited:
		case <-time.After(c.opts.StopTimeout):
			fmt.Fprintf(c.log, "kafkaharness: node %d ignored SIGTERM for %s; killing it\n", nd.id, c.opts.StopTimeout)
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-nd.exited
	c.mu.Lock()
	defer c.mu.Unlock()
	if nd.dumps {
		nd.dumps = false
		c.adoptArchive(nd)
	}
}

// checkArchive deletes a class data archive the JVM refused (the jars or
// the JDK changed under it), so that the next start writes a fresh one.
func (c *Cluster) checkArchive() {
	if !fileExists(c.cdsArchive) {
		return
	}
	f, err := os.Open(c.nodes[0].logPath())
	if err != nil {
		return
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, _ := io.ReadFull(f, head)
	if bytes.Contains(head[:n], []byte("Unable to use shared archive")) {
		fmt.Fprintf(c.log, "kafkaharness: the JVM refused class data archive %s; removing it\n", c.cdsArchive)
		os.Remove(c.cdsArchive)
	}
}

// adoptArchive makes the class data sharing archive that nd wrote at exit
// the one later JVMs map, if nd exited cleanly (a killed JVM leaves a partial
// file). c.mu must be held.
func (c *Cluster) adoptArchive(nd *node) {
	dump := c.cdsDump
	var ee *exec.ExitError
	if errors.As(nd.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			os.Remove(dump)
			c.cdsDump = "" // let the next start try again
			return
		}
	}
	if st, err := os.Stat(dump); err != nil || st.Size() == 0 {
		return
	}
	if err := os.Rename(dump, c.cdsArchive); err == nil {
		fmt.Fprintf(c.log, "kafkaharness: saved JVM class data archive %s (faster broker starts)\n", c.cdsArchive)
	}
}

// StartBroker restarts a stopped or killed node i with its old config and
// data, and waits until it serves metadata again (bounded by StartTimeout
// and ctx).
func (c *Cluster) StartBroker(ctx context.Context, i int) error {
	nd, err := c.node(i)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.fake != nil {
		defer c.mu.Unlock()
		if !c.fakeDown[i] {
			return nil
		}
		_, port, _ := strings.Cut(c.fakeAddrs[i], ":")
		p, _ := strconv.Atoi(port)
		if _, _, err := c.fake.AddNode(c.fakeIDs[i], p); err != nil {
			return fmt.Errorf("kafkaharness: kfake add node %d: %w", c.fakeIDs[i], err)
		}
		c.fakeDown[i] = false
		return nil
	}
	if nd.running() {
		c.mu.Unlock()
		return nil
	}
	begin := time.Now()
	err = c.startNode(nd)
	var others []*node
	for _, o := range c.nodes {
		if o.running() {
			others = append(others, o)
		}
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx, others); err != nil {
		return err
	}
	fmt.Fprintf(c.log, "kafkaharness: node %d back in %s\n", nd.id, time.Since(begin).Round(10*time.Millisecond))
	return nil
}

// Stop stops every node, waits for them, and removes the directory if Start
// created it. Nodes in a directory you gave get SIGTERM and a clean shutdown
// (SIGKILL after StopTimeout); in a temporary directory, whose data is about
// to be deleted, they are killed at once: a clean shutdown of a three-node
// quorum takes ~6 s, for nothing. Stop is idempotent.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		live.remove(c)
		if c.fake != nil {
			c.fake.Close()
			return
		}
		begin := time.Now()
		c.mu.Lock()
		var running []*node
		var kill []bool
		for _, nd := range c.nodes {
			if nd.running() {
				running = append(running, nd)
				// The node writing the class data archive needs a clean exit.
				kill = append(kill, c.ownDir && !nd.dumps)
			}
		}
		c.mu.Unlock()
		var wg sync.WaitGroup
		for i, nd := range running {
			wg.Go(func() { c.signalAndWait(nd, kill[i]) })
		}
		wg.Wait()
		if len(running) > 0 {
			fmt.Fprintf(c.log, "kafkaharness: stopped %d node(s) in %s\n", len(running), time.Since(begin).Round(10*time.Millisecond))
		}
		if c.ownDir {
			if err := os.RemoveAll(c.dir); err != nil {
				fmt.Fprintf(c.log, "kafkaharness: remove %s: %v\n", c.dir, err)
			}
		}
	})
}

// LogTail returns the last n lines of each node's server.log, each under a
// header naming the node and file. Print it when a test fails.
func (c *Cluster) LogTail(n int) string {
	if c.fake != nil {
		return "(kfake: no broker log)\n"
	}
	var b strings.Builder
	for _, nd := range c.nodes {
		b.WriteString(c.nodeTail(nd, n))
	}
	return b.String()
}

func (c *Cluster) nodeTail(nd *node, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "==> node %d: %s <==\n", nd.id, nd.logPath())
	s, err := readTail(nd.logPath(), n)
	if err != nil {
		fmt.Fprintf(&b, "(%v)\n", err)
		return b.String()
	}
	b.WriteString(s)
	if s != "" && !strings.HasSuffix(s, "\n") {
		b.WriteByte('\n')
	}
	return b.String()
}

// readTail returns the last n lines of the file at path, reading at most the
// last 1 MiB (Kafka's startup dump alone is hundreds of lines).
func readTail(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	const window = 1 << 20
	off := max(st.Size()-window, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return "", err
	}
	return tail(string(buf), n), nil
}

func startFake(opts Options, logw io.Writer) (*Cluster, error) {
	fc, err := kfake.NewCluster(
		kfake.NumBrokers(opts.Brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1), // as num.partitions=1 on the real broker
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "1000"}),
	)
	if err != nil {
		return nil, fmt.Errorf("kafkaharness: start kfake: %w", err)
	}
	c := &Cluster{opts: opts, log: logw, fake: fc, fakeAddrs: fc.ListenAddrs()}
	for i := range c.fakeAddrs {
		c.fakeIDs = append(c.fakeIDs, int32(i)) // kfake numbers its brokers 0..n-1
	}
	c.fakeDown = make([]bool, len(c.fakeAddrs))
	fmt.Fprintf(logw, "kafkaharness: kfake (%d broker(s)) at %s\n", opts.Brokers, strings.Join(c.fakeAddrs, ","))
	return c, nil
}
