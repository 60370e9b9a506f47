package step

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/metrics"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/state"
)

// Runtime runs one step as a member of its consumer group: one task per
// assigned partition, each restored from the changelog before it processes,
// all driven by one loop that commits every Config.CommitInterval.
type Runtime struct {
	def    *definition
	cfg    Config
	log    zerolog.Logger
	m      *stepMetrics
	source string   // ce_source of what the step emits
	topics []string // consumed: the inputs and the retry topic
	// topicIDs are the consumed topics' ids, for the offsets a transaction
	// commits again to be fenced (fenceOffsets). Set by prepare.
	topicIDs map[string][16]byte
	byName   map[string]*handler // handlers by event full name
	tr       *tracer             // nil when Config.Tracing is (trace.go)

	running atomic.Bool
	started atomic.Bool
	// joined: the group gave this member its first assignment (possibly
	// none); before it the step has no partitions yet and is not ready.
	joined atomic.Bool

	// Set up by Run.
	runCtx   context.Context
	store    *state.Store
	storeMu  sync.RWMutex // guards store against readers (read.go) racing Open and Close
	cl       *kgo.Client
	sess     *kgo.GroupTransactSession // exactly-once only
	protocol GroupProtocol

	// mu guards held, tasks and stopped. The group's callbacks add and
	// remove tasks; the loop owns everything inside an active task.
	mu sync.Mutex
	// held is the topics whose partition p the group gave this member.
	// A task runs partition p only while every consumed topic's partition
	// p is held (onAssigned).
	held     map[int32]map[string]bool
	tasks    map[int32]*task
	stopped  map[int32]error
	restores sync.WaitGroup

	// pending holds at-least-once offsets not yet committed (a failed
	// commit is retried with the next one).
	pending map[string]map[int32]kgo.EpochOffset
	// prodFailSince is when a run of intervals aborted by produce errors
	// began (exactly-once; zero when the last one committed), and
	// prodFailLogged when it was last logged. Loop only.
	prodFailSince, prodFailLogged time.Time
	// aborted counts the exactly-once intervals aborted in a row since the
	// last commit (abortBackoff). Loop only.
	aborted int
	// committedAt is when an interval last committed work. Loop only.
	committedAt time.Time
	// lastCommit is how long the last commit took: an interval that has
	// handled all it fetched lasts at least that long (exec.go). Loop only.
	lastCommit time.Duration

	// partitions is the inputs' partition count (placeGuard).
	partitions int32
	// known are the event types the codec knows (typeGuard).
	known map[string]bool
	// limits caches recordLimit's answer per topic (topicLimit).
	limits sync.Map
	// warned is when each kind of producer warning was last logged.
	warned map[string]time.Time
	// carry holds the records the last committed interval fetched but did
	// not start (admission ended first), in order, for the next interval
	// to take before it polls: the consumer is past them, so they must not
	// be dropped until an interval settles them and commits. Loop only.
	carry []carried
	// work feeds the handler workers (exec.go).
	work chan work

	// ended is closed and replaced at the end of every interval (WaitCommit).
	endMu sync.Mutex
	ended chan struct{}
}

// Task states.
const (
	taskRestoring int32 = iota
	taskRestored        // restored, waiting for the loop to activate it
	taskActive
	taskStopped // a record failed; the partition is paused until restart or rebalance
	taskRevoked
)

// task is one assigned partition number: that partition of every input.
type task struct {
	p     int32
	log   zerolog.Logger
	state atomic.Int32
	// ctx ends when the partition is revoked or the step shuts down: its
	// restore and its handler calls run under it.
	ctx      context.Context
	cancel   context.CancelFunc
	restored chan struct{} // closed when the restore goroutine returns

	// applied is how far each topic is processed, as of the last commit:
	// a record it has is a redelivery. Owned by the loop.
	applied map[string]state.Progress
	// retry is the record the task retries in place (retry.go); parking,
	// the instances blocked by a dead letter (park.go). Owned by the loop.
	retry   retryState
	parking parking
}

// NewRuntime checks the step and the config and prepares to run. It does not
// touch the network or the disk; Run does.
func NewRuntime(s Definition, cfg Config) (*Runtime, error) {
	d := sagaDefinition(s.definition(), cfg.Saga)
	errs := []error{d.validate(), cfg.Validate()}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = d.concurrency
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	cfg = cfg.withDefaults()
	rt := &Runtime{
		def:     d,
		cfg:     cfg,
		source:  d.group(),
		topics:  append(slices.Clone(d.inputs), d.retry()),
		byName:  make(map[string]*handler),
		held:    make(map[int32]map[string]bool),
		tasks:   make(map[int32]*task),
		stopped: make(map[int32]error),
		pending: make(map[string]map[int32]kgo.EpochOffset),
		ended:   make(chan struct{}),
		known:   make(map[string]bool),
		warned:  make(map[string]time.Time),
	}
	rt.log = cfg.Logger.With().Str(logging.FieldApp, d.app).Str(logging.FieldStep, d.name).Logger()
	hashed := map[uint32]string{}
	for _, topic := range rt.topics {
		if other, ok := hashed[state.TopicHash(topic)]; ok && other != topic {
			// Instances name their topics by this hash (state.Instance.Applied).
			errs = append(errs, fmt.Errorf("input topics %s and %s have the same 32-bit hash; rename one", other, topic))
		}
		hashed[state.TopicHash(topic)] = topic
	}
	for _, h := range d.handlers {
		name, err := cfg.Codec.TypeName(h.zero)
		if err != nil {
			errs = append(errs, fmt.Errorf("handler for %s: %w", h.typ, err))
			continue
		}
		rt.byName[name] = h
	}
	if tl, ok := cfg.Codec.(interface{ Types() []string }); ok {
		for _, n := range tl.Types() {
			rt.known[n] = true
		}
	}
	errs = append(errs, rt.checkSaga())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("step %s: %w", d.group(), err)
	}
	rt.m = newStepMetrics(cfg.Registerer, d.app, d.name)
	metrics.Register(cfg.Registerer, newMemoryCollector()).add(d.app, d.name, rt.storeMemory)
	rt.tr = newTracer(cfg.Tracing, d, rt.topics, cfg)
	return rt, nil
}

// Run runs s with cfg until ctx is cancelled: NewRuntime, then Runtime.Run.
func Run(ctx context.Context, s Definition, cfg Config) error {
	rt, err := NewRuntime(s, cfg)
	if err != nil {
		return err
	}
	return rt.Run(ctx)
}

// Ready reports whether the step is processing every partition it holds:
// false while starting and joining its group (until its first
// assignment), while any partition restores, or while one is stopped by a
// failed record. The reason says which. It fits
// api.Server.AddReadiness.
func (rt *Runtime) Ready() (ready bool, reason string) {
	if !rt.started.Load() {
		return false, "starting"
	}
	if !rt.joined.Load() {
		return false, "joining consumer group " + rt.def.group()
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var restoring []int32
	for p, t := range rt.tasks {
		if s := t.state.Load(); s == taskRestoring || s == taskRestored {
			restoring = append(restoring, p)
		}
	}
	if len(restoring) > 0 {
		slices.Sort(restoring)
		return false, fmt.Sprintf("restoring partitions %v from %s", restoring, rt.def.changelog())
	}
	if len(rt.stopped) > 0 {
		var parts []string
		for p, err := range rt.stopped {
			parts = append(parts, fmt.Sprintf("partition %d stopped: %v", p, err))
		}
		slices.Sort(parts)
		return false, strings.Join(parts, "; ")
	}
	return true, ""
}

// Run joins the step's group and processes until ctx is cancelled, then
// finishes the interval in progress, commits it, leaves the group and closes
// the store. It returns nil after a clean shutdown, or the error that
// stopped it. A Runtime runs once.
func (rt *Runtime) Run(ctx context.Context) (err error) {
	if !rt.running.CompareAndSwap(false, true) {
		return errors.New("step runtime already ran; make a new one")
	}
	rt.runCtx = ctx
	// The store's default durability (a WAL, never synced) is argued in
	// state.Durability: under exactly-once the store may lag Kafka but never
	// lead it, so a sync would buy nothing.
	store, err := state.Open(rt.cfg.StateDir, state.Options{App: rt.def.app, Step: rt.def.name, Logger: rt.log})
	if err != nil {
		return fmt.Errorf("step %s: %w", rt.def.group(), err)
	}
	rt.storeMu.Lock()
	rt.store = store
	rt.storeMu.Unlock()
	if why := rt.store.Wiped(); why != "" {
		rt.log.Warn().Str("reason", why).Msg("state store was wiped; every partition restores from the changelog's start")
	}
	defer func() {
		rt.storeMu.Lock()
		cerr := rt.store.Close()
		rt.store = nil
		rt.storeMu.Unlock()
		if cerr != nil && err == nil {
			err = cerr
		}
	}()

	partitions, err := rt.prepare(ctx)
	if err != nil {
		return fmt.Errorf("step %s: %w", rt.def.group(), err)
	}
	rt.partitions = partitions
	if err := rt.connect(); err != nil {
		return fmt.Errorf("step %s: %w", rt.def.group(), err)
	}
	defer rt.shutdown()
	rt.work = make(chan work)
	for range rt.cfg.Concurrency {
		go rt.worker()
	}
	defer close(rt.work)
	rt.started.Store(true)
	rt.log.Info().Str("guarantee", rt.cfg.Guarantee.String()).Str("group_protocol", string(rt.protocol)).
		Strs("topics", rt.topics).Int32("partitions", partitions).Str("state_dir", rt.cfg.StateDir).
		Dur("commit_interval", rt.cfg.CommitInterval).Int("concurrency", rt.cfg.Concurrency).
		Dur("handler_timeout", rt.cfg.HandlerTimeout).Msg("step running")

	var lost []time.Time // when the transactional session was lost, recently
	for {
		if rt.cfg.Guarantee == ExactlyOnce {
			err = rt.runExactlyOnce(ctx)
		} else {
			err = rt.runAtLeastOnce(ctx)
		}
		var sl *sessionLost
		if !errors.As(err, &sl) || ctx.Err() != nil {
			break
		}
		// The broker ended the transaction under us (it outlived the
		// transaction timeout while a broker failed over, or the
		// coordinator moved), or ending it failed (a broker killed, the
		// transaction coordinator moving): rejoin with a new session, as
		// a restart would, but without one; the new producer id aborts
		// what the old one left open. Four times in five minutes with no
		// interval committed in between is not a failover: give up with
		// what it says.
		now := time.Now()
		lost = append(slices.DeleteFunc(lost, func(t time.Time) bool { return now.Sub(t) > 5*time.Minute }), now)
		if len(lost) > 3 && rt.committedAt.Before(lost[0]) {
			err = sl.fatal()
			break
		}
		rt.log.Warn().Err(sl.err).Int("times_in_5m", len(lost)).Msg("transaction state lost; leaving the group and joining again with a new session (state stays; partitions restore what they missed)")
		rt.shutdown()
		rt.joined.Store(false)
		rt.carry = nil
		if err = rt.connect(); err != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("step %s: %w", rt.def.group(), err)
	}
	rt.log.Info().Msg("step stopped")
	return nil
}

// carried is a record carried over to the next interval, with the task it
// was fetched for: if its partition was revoked (and perhaps assigned
// again, as a new task that fetches from the committed offset), it is
// dropped.
type carried struct {
	t *task
	r *kgo.Record
}

// sessionLost is an end of transaction that the broker refused because
// the producer's epoch moved on: the transaction timed out on the broker,
// or another process took the transactional id. Run rejoins on the first,
// and fails on the second (it keeps coming back).
type sessionLost struct {
	err    error
	fenced bool // the producer was fenced, rather than End failing
}

func (e *sessionLost) Error() string { return "end transaction: " + e.err.Error() }
func (e *sessionLost) Unwrap() error { return e.err }

func (e *sessionLost) fatal() error {
	if !e.fenced {
		return fmt.Errorf("end transaction: %w (ending transactions keeps failing with nothing committed in between: is the cluster reachable, and its transaction coordinator up?)", e.err)
	}
	return fmt.Errorf("end transaction: %w (the transactional id keeps being fenced: two processes on one state dir, or a copied one? give each its own --state-dir)", e.err)
}

// prepare checks and creates topics and picks the group protocol.
func (rt *Runtime) prepare(ctx context.Context) (int32, error) {
	cl, err := kafka.NewClient(ctx, rt.cfg.Kafka)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	n, ids, err := prepareTopics(ctx, cl, rt.def, kafka.TopicWait{Max: topicWait, Log: rt.log})
	if err != nil {
		return 0, err
	}
	rt.topicIDs = ids
	rt.protocol = rt.cfg.GroupProtocol
	if rt.protocol == GroupProtocolAuto {
		rt.protocol = GroupProtocolClassic
		if ok, err := offers848(ctx, adm); err != nil {
			rt.log.Warn().Err(err).Msg("cannot tell whether the brokers offer KIP-848; using the classic group protocol")
		} else if ok {
			rt.protocol = GroupProtocolConsumer
		}
	}
	return n, nil
}

// connect builds the group client (a transact session under exactly-once).
func (rt *Runtime) connect() error {
	base, err := rt.cfg.Kafka.Opts()
	if err != nil {
		return err
	}
	opts := append(base,
		kgo.ConsumerGroup(rt.def.group()),
		kgo.ConsumeTopics(rt.topics...),
		// A step deployed for the first time handles what is already there.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A partition resumed after a retry's backoff joins the fetches
		// only when the one in flight returns: franz-go's default 5 s long
		// poll stretched a 100 ms backoff to seconds on a quiet topic (5
		// attempts took 13 s, not 1.5 s). 500 ms is the Java consumer's.
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.ConsumePreferringLagFn(rt.m.lagFn), // consumer lag past transaction markers (metrics.go)
		kgo.OnPartitionsAssigned(rt.onAssigned),
		kgo.OnPartitionsRevoked(rt.onRevoked),
		kgo.OnPartitionsLost(rt.onRevoked),
		kgo.RecordPartitioner(partitioner{changelog: rt.def.changelog(), retry: rt.def.retry(), dlq: rt.def.dlq(), keyed: kgo.StickyKeyPartitioner(nil)}),
		kgo.DisableAutoCommit(),
		// An output goes out as soon as it is produced rather than after
		// franz-go's default 10 ms linger: the interval's end flushes
		// anyway, and sending early overlaps the network with the
		// handlers still running. Batching still happens behind the
		// request in flight.
		kgo.ProducerLinger(0),
	)
	opts = append(opts, rt.traceOpts()...)
	if st := rt.cfg.SessionTimeout; st > 0 {
		// Three heartbeats a session, as Kafka's clients default to (3 s
		// of 45 s would refuse a session under 3 s).
		opts = append(opts, kgo.SessionTimeout(st), kgo.HeartbeatInterval(min(3*time.Second, st/3)))
	}
	switch rt.protocol {
	case GroupProtocolConsumer:
		// The broker's range assignor keeps partition N of every input on
		// one member, as a step's state needs.
		opts = append(opts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer()))
	default:
		opts = append(opts, kgo.Balancers(Balancer()))
	}

	if rt.cfg.Guarantee == ExactlyOnce {
		id := rt.cfg.InstanceID
		if id == "" {
			id = rt.store.InstanceID()
		}
		// No BlockRebalanceOnPoll here: the session aborts a transaction
		// that a revocation overlaps, and blocking the revocation until End
		// could wait on the very heartbeat End needs (KIP-848).
		opts = append(opts,
			kgo.TransactionalID(rt.def.group()+"-"+id),
			kgo.TransactionTimeout(rt.cfg.TransactionTimeout),
		)
		rt.sess, err = kgo.NewGroupTransactSession(opts...)
		if err != nil {
			return fmt.Errorf("kafka client: %w", err)
		}
		rt.cl = rt.sess.Client()
		return nil
	}
	// At-least-once: rebalances wait for the end of an interval, so that
	// the offsets committed are always of partitions still held.
	rt.cl, err = kgo.NewClient(append(opts, kgo.BlockRebalanceOnPoll())...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	return nil
}

// shutdown leaves the group (revoking every task) and waits for restores.
func (rt *Runtime) shutdown() {
	if rt.sess != nil {
		rt.sess.Close()
	} else if rt.cl != nil {
		rt.cl.CloseAllowingRebalance()
	}
	rt.mu.Lock()
	for p, t := range rt.tasks {
		rt.revokeLocked(t)
		delete(rt.tasks, p)
	}
	clear(rt.held)
	rt.mu.Unlock()
	rt.restores.Wait()
}

// storeMemory is the state store's memory (memoryCollector): none before
// Run opens it or after it closes.
func (rt *Runtime) storeMemory() (memtables, cache int64) {
	rt.storeMu.RLock()
	defer rt.storeMu.RUnlock()
	if rt.store == nil {
		return 0, 0
	}
	return rt.store.Memory()
}

// topicHash names topic in an instance's applied offsets.
func (rt *Runtime) topicHash(topic string) uint32 { return state.TopicHash(topic) }

// tps is partition p of every consumed topic.
func (rt *Runtime) tps(p int32) map[string][]int32 {
	m := make(map[string][]int32, len(rt.topics))
	for _, t := range rt.topics {
		m[t] = []int32{p}
	}
	return m
}

// onAssigned runs in the group's goroutine before fetching of the new
// partitions starts: it pauses them and, for each partition p now held on
// every consumed topic, starts p's task with its restore, so that no record
// of a partition is seen before its state is complete.
//
// A partition held on only some topics waits, paused: its state is shared
// by every topic's partition p, and another member holds the rest. With
// the classic protocol troupe's balancer never splits p; KIP-848's broker
// assigns each topic among the members subscribed to it, and members
// subscribe differently while a topology change (a step added to a saga)
// rolls out. Two members would then each run p with their own state.
func (rt *Runtime) onAssigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	defer rt.joined.Store(true) // franz-go calls this at every join, even with nothing new
	var fresh, partial []int32
	for topic, ps := range assigned {
		for _, p := range ps {
			if rt.tasks[p] != nil {
				continue // told again of what it runs: leave it be
			}
			cl.PauseFetchPartitions(map[string][]int32{topic: {p}})
			if rt.held[p] == nil {
				rt.held[p] = map[string]bool{}
			}
			rt.held[p][topic] = true
		}
	}
	for p, topics := range rt.held {
		switch {
		case rt.tasks[p] != nil:
		case len(topics) < len(rt.topics):
			partial = append(partial, p)
		default:
			rt.startTask(cl, p)
			fresh = append(fresh, p)
		}
	}
	if len(fresh) > 0 {
		slices.Sort(fresh)
		rt.log.Info().Ints32("partitions", fresh).Msg("partitions assigned; restoring")
	}
	if len(partial) > 0 {
		slices.Sort(partial)
		rt.log.Warn().Ints32("partitions", partial).Strs("topics", rt.topics).
			Msg("partitions assigned on only some of the step's topics; waiting for the rest, paused (another member holds them: do its replicas subscribe to other topics, a topology change rolling out?)")
	}
}

// startTask starts partition p's task: paused, restoring. Under Runtime.mu,
// in a group callback (rt.cl may not be set yet: the first join can come
// before connect returns).
func (rt *Runtime) startTask(cl *kgo.Client, p int32) {
	t := &task{
		p:        p,
		log:      rt.log.With().Int32(logging.FieldPartition, p).Logger(),
		restored: make(chan struct{}),
	}
	rt.tasks[p] = t
	cl.PauseFetchPartitions(rt.tps(p))
	rt.m.restoring.Inc()
	t.ctx, t.cancel = context.WithCancel(rt.runCtx)
	t.retry.attempts = make(map[recordPlace]int)
	rt.restores.Add(1)
	go rt.restore(t.ctx, t)
}

// onRevoked (and on lost) drops the task of every partition that went on
// any topic, and pauses what is still held of it (onAssigned). State stays
// in the store: the next owner may be this process again, and then it
// restores only what changed meanwhile.
func (rt *Runtime) onRevoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	rt.mu.Lock()
	var gone []*task
	for topic, ps := range revoked {
		for _, p := range ps {
			rt.m.dropLag(topic, p)
			delete(rt.held[p], topic)
			if len(rt.held[p]) == 0 {
				delete(rt.held, p)
			}
			t := rt.tasks[p]
			if t == nil {
				continue
			}
			delete(rt.tasks, p)
			rt.revokeLocked(t)
			gone = append(gone, t)
			cl.PauseFetchPartitions(rt.tps(p))
		}
	}
	rt.mu.Unlock()
	var ps []int32
	for _, t := range gone {
		<-t.restored // cancelled above; a restore stops within a poll
		ps = append(ps, t.p)
	}
	if len(ps) > 0 {
		slices.Sort(ps)
		rt.log.Info().Ints32("partitions", ps).Msg("partitions revoked")
	}
}

func (rt *Runtime) revokeLocked(t *task) {
	if prev := t.state.Swap(taskRevoked); prev == taskRestoring || prev == taskRestored {
		rt.m.restoring.Dec()
	}
	rt.m.parked.Sub(float64(t.parking.parked.Swap(0)))
	delete(rt.stopped, t.p)
	t.cancel()
}

// restore restores t's partition, retrying with backoff, then marks it
// restored for the loop to activate.
func (rt *Runtime) restore(ctx context.Context, t *task) {
	defer rt.restores.Done()
	defer close(t.restored)
	r := state.Restorer{
		Kafka:  rt.cfg.Kafka,
		Store:  rt.store,
		Topic:  rt.def.changelog(),
		Logger: rt.log, // it adds the changelog's topic and partition
		// Longer than a transaction of a dead previous owner can stay open.
		SettleTimeout: 3 * rt.cfg.TransactionTimeout,
		OnRecords:     func(n int) { rt.m.restoreRecords.Add(float64(n)) },
	}
	backoff := 250 * time.Millisecond
	for {
		start := time.Now()
		_, err := r.Restore(ctx, t.p)
		rt.m.restoreSeconds.Add(time.Since(start).Seconds())
		if err == nil {
			t.state.CompareAndSwap(taskRestoring, taskRestored)
			return
		}
		if ctx.Err() != nil {
			return
		}
		t.log.Warn().Err(err).Dur("retry_in", backoff).Msg("restore failed; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// activateRestored starts processing the partitions whose restore finished:
// it loads what they have applied and resumes fetching them. Loop only.
func (rt *Runtime) activateRestored() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var activated []int32
	defer func() {
		// One line per batch of partitions, not one per partition.
		if len(activated) > 0 {
			slices.Sort(activated)
			rt.log.Info().Ints32("partitions", activated).Msg("partitions restored; processing")
		}
	}()
	for p, t := range rt.tasks {
		if t.state.Load() != taskRestored {
			continue
		}
		t.applied = make(map[string]state.Progress)
		err := rt.store.Scan(p, []byte{state.KindInputOffset}, func(k, v []byte) error {
			pr, err := state.DecodeProgress(v)
			t.applied[string(k[1:])] = pr
			return err
		})
		if err != nil {
			return fmt.Errorf("load applied offsets of partition %d: %w", p, err)
		}
		if err := rt.loadParking(t); err != nil {
			return err
		}
		if !t.state.CompareAndSwap(taskRestored, taskActive) {
			continue
		}
		rt.m.restoring.Dec()
		rt.cl.ResumeFetchPartitions(rt.tps(p))
		activated = append(activated, p)
	}
	return nil
}

// WaitCommit returns once the step has ended an interval that began after
// the call: whatever it had handled before is then committed (or, if that
// interval aborted, will be handled again). For tests and tools that need
// to read state after an output.
func (rt *Runtime) WaitCommit(ctx context.Context) error {
	for range 2 { // the interval in progress may have begun before the call
		rt.endMu.Lock()
		ch := rt.ended
		rt.endMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (rt *Runtime) endInterval() {
	rt.endMu.Lock()
	close(rt.ended)
	rt.ended = make(chan struct{})
	rt.endMu.Unlock()
}

// Partitions lists the partitions the step is processing now (restored and
// active), in order.
func (rt *Runtime) Partitions() []int32 {
	var ps []int32
	for _, t := range rt.activeTasks() {
		ps = append(ps, t.p)
	}
	slices.Sort(ps)
	return ps
}

// activeTasks snapshots the active tasks.
func (rt *Runtime) activeTasks() []*task {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	ts := make([]*task, 0, len(rt.tasks))
	for _, t := range rt.tasks {
		if t.state.Load() == taskActive {
			ts = append(ts, t)
		}
	}
	return ts
}

func (rt *Runtime) task(p int32) *task {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.tasks[p]
}

// stopTask pauses t after a record failed: the record is not skipped, and
// is tried again after a restart or when the partition moves.
func (rt *Runtime) stopTask(t *task, err error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.tasks[t.p] != t || !t.state.CompareAndSwap(taskActive, taskStopped) {
		return
	}
	rt.stopped[t.p] = err
	rt.cl.PauseFetchPartitions(rt.tps(t.p))
}

// partitioner writes changelog records to the partition they name (the
// partition of the state they mirror), as it does the events released from
// the park into the retry topic (the partition of the task that parked
// them); dead letters to the partition of the failed record when the DLQ
// has it (replay.KeepPartition); and hashes keys for every other topic,
// like Kafka's default, so an instance's events share a partition number on
// every topic.
type partitioner struct {
	changelog, retry, dlq string
	keyed                 kgo.Partitioner
}

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	switch topic {
	case p.changelog, p.retry:
		return kgo.ManualPartitioner().ForTopic(topic)
	case p.dlq:
		return replay.KeepPartition().ForTopic(topic)
	}
	return p.keyed.ForTopic(topic)
}
