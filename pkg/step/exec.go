package step

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/state"
)

// Key-ordered concurrency within one commit interval.
//
// Each record the interval admits becomes a job in its instance's lane, in
// offset order. Only a lane's head is worked on: its guards run in the
// loop, then its handler on a goroutine of its own, at most
// Config.Concurrency handlers at once across the lanes. When a handler
// returns, the loop settles the job (its effects enter the transaction)
// and the lane's next job starts, seeing the state the previous one left.
// So handlers of different instances overlap, one instance's run in offset
// order, and every write to the transaction, the store batch and the
// producer is made by the loop alone, in one order per instance.
//
// An interval admits records for at most Config.CommitInterval; it ends
// sooner when everything it fetched is settled and nothing more is
// buffered (so latency follows the work, not the clock), but not before
// the time the last commit took (so that under load transactions stay
// large). Once admission ends no new handler starts: the jobs still queued
// are left for the next interval, and the handlers running get at most
// Config.HandlerTimeout. Commit interval plus handler timeout stay below
// the transaction timeout (Config.Validate): an interval always commits in
// time.
//
// A record left unsettled (queued at the end, or held for a retry) keeps
// its partition's committed offset at it, while later records of other
// instances may be done: those are remembered in the partition's progress
// (state.Progress, in the same transaction) and skipped when the partition
// is fetched again from the committed offset.

// job is one unit of an interval's work for one instance: an input record,
// or a due timer that calls the OnTimer handler.
type job struct {
	tc    *taskCycle
	lane  *lane
	rec   *kgo.Record // nil for a timer
	slot  int         // the record's index in tc.inputs[rec.Topic]
	timer *dueTimer

	// Set by the guards for vCall.
	id      string
	h       *handler
	cl      *call
	ev      any
	name    string // the event's full name
	key     []byte
	inst    state.Instance
	eventID string

	// Set by the worker.
	started time.Time
	err     error
}

// lane is one instance's jobs in this interval, in order; jobs[0] runs.
type lane struct {
	key  laneKey
	jobs []*job
	busy bool // jobs[0]'s handler is running
}

type laneKey struct {
	p  int32
	id string
}

// input is what an interval fetched of one topic of a task's partition,
// in offset order, and which of it is settled.
type input struct {
	recs    []*kgo.Record
	settled []bool
}

// recordPlace names a record of a partition.
type recordPlace struct {
	topic  string
	offset int64
}

// sched is the interval's scheduler state. Loop only, except done and
// closed, which the workers use.
type sched struct {
	lanes   map[laneKey]*lane
	ready   []*lane       // lanes whose head waits to start, in the order they became ready
	running map[*job]bool // handlers running
	done    chan *job     // finished handlers
	closed  chan struct{} // closed at the end of the interval: late workers drop their result
	pending int           // jobs admitted and not settled
	// carried is what the interval took of Runtime.carry.
	carried []carried
	// maxPending bounds pending: enough lookahead to find other instances
	// to run, few enough that what is left when admission ends (carried
	// over to the next interval) stays small.
	maxPending int
	begin      time.Time
	admitBy    time.Time // admission ends then
	linger     time.Duration
}

func (s *sched) init(rt *Runtime) {
	s.lanes = make(map[laneKey]*lane)
	s.running = make(map[*job]bool)
	s.done = make(chan *job, rt.cfg.Concurrency)
	s.closed = make(chan struct{})
	s.begin = time.Now()
	s.admitBy = s.begin.Add(rt.cfg.CommitInterval)
	s.linger = min(rt.lastCommit, rt.cfg.CommitInterval)
	s.maxPending = min(rt.cfg.MaxPollRecords, max(256, 8*rt.cfg.Concurrency))
}

// halted reports whether the interval stops starting work: it must abort,
// a partition stopped it (exactly-once), or the step shuts down.
func (c *cycle) halted() bool {
	return c.abort || (c.failed != nil && c.rt.cfg.Guarantee == ExactlyOnce) || c.ctx.Err() != nil
}

// run is the interval's work: due timers, then records polled and handled
// until the interval ends, then the handlers still running. It returns
// only errors that stop the step.
func (c *cycle) run(poll func(context.Context, int) kgo.Fetches) error {
	rt := c.rt
	c.init(rt)
	defer close(c.closed)
	if err := c.fireTimers(c.begin); err != nil {
		return err
	}
	c.admitCarried()
	pctx, cancel := context.WithDeadline(c.ctx, c.admitBy)
	defer cancel()
	for {
		if err := c.dispatch(); err != nil {
			return err
		}
		if c.halted() {
			break
		}
		now := time.Now()
		if !now.Before(c.admitBy) {
			break
		}
		idle := len(c.running) == 0 && len(c.ready) == 0
		buffered := rt.cl.BufferedFetchRecords() > 0
		var err error
		switch {
		case idle && c.work > 0 && !buffered && now.Sub(c.begin) >= c.linger:
			// Everything fetched is settled: commit now.
			return c.drain()
		case idle && c.work > 0:
			// Settled, but sooner than the last commit took: linger for
			// more, so that under load transactions stay large.
			lctx, lcancel := context.WithDeadline(pctx, c.begin.Add(c.linger))
			err = c.poll(lctx, poll)
			lcancel()
		case idle:
			err = c.poll(pctx, poll) // blocks until records come or admission ends
		case buffered && c.pending < c.maxPending:
			// Returns at once with what is buffered (the short deadline
			// covers data buffered for a paused partition, not returned).
			bctx, bcancel := context.WithTimeout(pctx, time.Millisecond)
			err = c.poll(bctx, poll)
			bcancel()
		default:
			// Handlers are running: wait for one to finish (new records
			// are polled once they have; it is busy meanwhile).
			err = c.await(c.admitBy)
		}
		if err == nil {
			err = c.reap()
		}
		if err != nil {
			return err
		}
	}
	return c.drain()
}

// poll fetches more records and admits them.
func (c *cycle) poll(ctx context.Context, poll func(context.Context, int) kgo.Fetches) error {
	fs := poll(ctx, c.maxPending-c.pending)
	if err := c.rt.fetchErrors(fs); err != nil {
		return err
	}
	c.admit(fs)
	return nil
}

// admit makes jobs of a poll's records, partition by partition, in order.
func (c *cycle) admit(fs kgo.Fetches) {
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		end := ftp.LastStableOffset
		if end <= 0 {
			end = ftp.HighWatermark
		}
		c.rt.m.setLag(ftp.Topic, ftp.Partition, max(end-ftp.Records[len(ftp.Records)-1].Offset-1, 0))
		tc := c.taskCycle(ftp.Partition)
		in := tc.input(ftp.Topic)
		for _, r := range ftp.Records {
			in.recs = append(in.recs, r)
			in.settled = append(in.settled, false)
			if tc.stopped || c.halted() {
				continue // fetched again after the hold or the abort
			}
			c.enqueue(&job{tc: tc, rec: r, slot: len(in.recs) - 1}, instanceOf(r))
		}
	})
}

// admitCarried admits the records the last interval left unstarted,
// before anything polled after them; those of partitions revoked since are
// dropped (their next owner, perhaps this process again, fetches them from
// the committed offset). The interval keeps what it took: if it aborts,
// the session rewinds the consumer only to where it polled, past these,
// so they are carried again (see runExactlyOnce).
func (c *cycle) admitCarried() {
	c.carried, c.rt.carry = c.rt.carry, nil
	for _, cr := range c.carried {
		r := cr.r
		if t := c.rt.task(r.Partition); t != cr.t || t.state.Load() != taskActive {
			continue
		}
		tc := c.taskCycle(r.Partition)
		in := tc.input(r.Topic)
		in.recs = append(in.recs, r)
		in.settled = append(in.settled, false)
		c.enqueue(&job{tc: tc, rec: r, slot: len(in.recs) - 1}, instanceOf(r))
	}
}

// enqueue appends j to the lane of instance id.
func (c *cycle) enqueue(j *job, id string) {
	k := laneKey{p: j.tc.p, id: id}
	l := c.lanes[k]
	if l == nil {
		l = &lane{key: k}
		c.lanes[k] = l
	}
	j.lane = l
	l.jobs = append(l.jobs, j)
	c.pending++
	if len(l.jobs) == 1 {
		c.ready = append(c.ready, l)
	}
}

// dispatch works on the ready lanes' heads while handler slots are free:
// guards, then a settle or a handler start.
func (c *cycle) dispatch() error {
	for len(c.ready) > 0 && len(c.running) < c.rt.cfg.Concurrency && !c.halted() && time.Now().Before(c.admitBy) {
		l := c.ready[0]
		c.ready = c.ready[1:]
		j := l.jobs[0]
		if j.tc.stopped {
			c.dropLane(l)
			continue
		}
		v := c.guard(j)
		if v.kind == vCall {
			c.start(j)
			continue
		}
		if err := c.settle(j, v); err != nil {
			return err
		}
		c.next(l)
	}
	return nil
}

// start runs j's handler on one of the runtime's workers.
func (c *cycle) start(j *job) {
	rt := c.rt
	j.lane.busy = true
	j.started = time.Now()
	c.running[j] = true
	rt.work <- work{c: c, j: j}
}

// work is a handler call for a worker: the job and its interval.
type work struct {
	c *cycle
	j *job
}

// worker runs handler calls until the runtime's work channel closes. A
// worker whose call is given up (drain) is replaced, so Concurrency
// workers are always free to take calls.
func (rt *Runtime) worker() {
	for w := range rt.work {
		w.c.runJob(w.j)
	}
}

// runJob is one handler call, under a context that ends at the handler
// timeout, at shutdown and when the partition is revoked.
func (c *cycle) runJob(j *job) {
	base := c.ctx
	if t := j.tc.t; t != nil && t.ctx != nil {
		base = t.ctx
	}
	ctx, cancel := context.WithTimeout(base, c.rt.cfg.HandlerTimeout)
	ctx, span := c.rt.startSpan(ctx, j)
	j.run(ctx)
	c.rt.endSpan(span, j)
	cancel()
	c.rt.m.handler.Observe(time.Since(j.started).Seconds())
	select {
	case c.done <- j:
	case <-c.closed: // given up: the interval ended without it
	}
}

// next pops the settled head of lane l and readies the lane's next job.
func (c *cycle) next(l *lane) {
	l.jobs[0] = nil
	l.jobs = l.jobs[1:]
	l.busy = false
	c.pending--
	if len(l.jobs) > 0 {
		c.ready = append(c.ready, l)
	} else {
		delete(c.lanes, l.key)
	}
}

// dropLane leaves l's jobs for a later interval (its partition stopped).
func (c *cycle) dropLane(l *lane) {
	c.pending -= len(l.jobs)
	l.jobs = nil
	delete(c.lanes, l.key)
}

// reap settles the handlers that finished, without waiting.
func (c *cycle) reap() error {
	for {
		select {
		case j := <-c.done:
			if err := c.reaped(j); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (c *cycle) reaped(j *job) error {
	delete(c.running, j)
	if err := c.settle(j, c.finish(j)); err != nil {
		return err
	}
	c.next(j.lane)
	return nil
}

// await waits for a handler to finish, until by at the latest, and
// settles it.
func (c *cycle) await(by time.Time) error {
	if len(c.running) == 0 {
		return nil
	}
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case j := <-c.done:
		return c.reaped(j)
	case <-t.C:
		return nil
	}
}

// errHandlerAbandoned fails a call given up past its timeout.
var errHandlerAbandoned = errors.New("handler ran past its timeout and ignored its context's end; the call was given up (Config.HandlerTimeout, --handler-timeout)")

// handlerSlack is how long past its timeout the interval waits for a
// handler that ignores its context before it gives the call up.
const handlerSlack = 100 * time.Millisecond

// drain waits for the handlers still running, each until its timeout; a
// handler that ignores its context is given up (its record fails the
// attempt, and under shutdown the step exits without it). Queued jobs stay
// for the next interval.
func (c *cycle) drain() error {
	rt := c.rt
	for len(c.running) > 0 {
		var first time.Time
		for j := range c.running {
			if dl := j.started.Add(rt.cfg.HandlerTimeout + handlerSlack); first.IsZero() || dl.Before(first) {
				first = dl
			}
		}
		t := time.NewTimer(time.Until(first))
		select {
		case j := <-c.done:
			t.Stop()
			if err := c.reaped(j); err != nil {
				return err
			}
			continue
		case <-t.C:
		}
		now := time.Now()
		for j := range c.running {
			if now.Before(j.started.Add(rt.cfg.HandlerTimeout + handlerSlack)) {
				continue
			}
			rt.log.Error().Str(logging.FieldSaga, j.id).Int32(logging.FieldPartition, j.tc.p).
				Dur("call_age", now.Sub(j.started)).Dur("handler_timeout", rt.cfg.HandlerTimeout).
				Msg("handler ignored its context past its timeout; giving the call up (pass Context.Context() to what it waits on)")
			delete(c.running, j)
			go rt.worker() // in place of the one stuck in the call
			j.err = errHandlerAbandoned
			if c.ctx.Err() != nil && j.rec != nil {
				// Shutting down: leave the record for the next owner.
				c.hold(j.tc, time.Time{})
				c.next(j.lane)
				continue
			}
			if err := c.settle(j, c.finish(j)); err != nil {
				return err
			}
			c.next(j.lane)
		}
	}
	return nil
}

// taskCycle is the interval's view of partition p.
func (c *cycle) taskCycle(p int32) *taskCycle {
	tc := c.tasks[p]
	if tc == nil {
		tc = &taskCycle{t: c.rt.task(p), p: p, inputs: make(map[string]*input)}
		c.tasks[p] = tc
	}
	return tc
}

func (tc *taskCycle) input(topic string) *input {
	in := tc.inputs[topic]
	if in == nil {
		in = &input{}
		tc.inputs[topic] = in
	}
	return in
}

// settled marks record job j finished.
func (tc *taskCycle) settled(j *job) {
	if in := tc.inputs[j.rec.Topic]; in != nil && j.slot < len(in.settled) {
		in.settled[j.slot] = true
	}
}

// progress is where the interval leaves each topic of the partition: the
// first record it did not settle (or past the last it fetched), with the
// records settled beyond it, and that position with its leader epoch for
// the offset commit. rewind reports whether the consumer must fetch from
// there again (it was polled past it).
func (tc *taskCycle) progress(topic string) (state.Progress, kgo.EpochOffset, bool) {
	if pr, ok := tc.final[topic]; ok {
		return pr.p, pr.eo, pr.rewind
	}
	p, eo, rewind := tc.computeProgress(topic)
	if tc.final == nil {
		tc.final = make(map[string]finalProgress)
	}
	tc.final[topic] = finalProgress{p, eo, rewind}
	return p, eo, rewind
}

// finalProgress memoizes progress: it is asked for by the changelog, the
// offset commit and the store, once the interval's records are settled.
type finalProgress struct {
	p      state.Progress
	eo     kgo.EpochOffset
	rewind bool
}

func (tc *taskCycle) computeProgress(topic string) (p state.Progress, eo kgo.EpochOffset, rewind bool) {
	in := tc.inputs[topic]
	var old state.Progress
	if tc.t != nil {
		old = tc.t.applied[topic]
	}
	if in == nil || len(in.recs) == 0 {
		return old, kgo.EpochOffset{Epoch: -1, Offset: old.Next}, false
	}
	first := -1
	for i, ok := range in.settled {
		if !ok {
			first = i
			break
		}
	}
	last := in.recs[len(in.recs)-1]
	if first < 0 {
		p.Next = last.Offset + 1
		eo = kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: p.Next}
	} else {
		r := in.recs[first]
		p.Next = r.Offset
		eo = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		rewind = true
		for i := first + 1; i < len(in.recs); i++ {
			if in.settled[i] {
				p.Done = append(p.Done, in.recs[i].Offset)
			}
		}
	}
	p.Next = max(p.Next, old.Next)
	p.Done = append(p.Done, old.Done...)
	p.Done = slices.DeleteFunc(p.Done, func(off int64) bool { return off <= p.Next })
	slices.Sort(p.Done)
	p.Done = slices.Compact(p.Done)
	return p, eo, rewind
}
