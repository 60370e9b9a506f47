package step

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/troupehq/troupe/pkg/metrics"
)

// Outcomes of one input record, the outcome label of
// troupe_step_events_total.
const (
	OutcomeProcessed = "processed" // the handler ran and its effects were applied
	OutcomeDuplicate = "duplicate" // already processed: redelivered offset or known ce_id
	OutcomeIgnored   = "ignored"   // no handler for its event type
	OutcomeError     = "error"     // failed past its retries (or permanently): dead-lettered, or its partition stopped
	OutcomeParked    = "parked"    // its instance waits on a dead letter: kept in the state store until released
	// OutcomeMoved: found in another partition than its key's (the
	// producer's partitioner is not murmur2): produced again to its
	// partition, where it is handled.
	OutcomeMoved = "moved"
	// OutcomeMisplaced: found in another partition than its key's, and
	// left for the saga's coordinator to move (a step of a saga does not
	// move records itself, so that one copy is made).
	OutcomeMisplaced = "misplaced"
	// OutcomeOrphan: a forward event of a saga that no step of the saga
	// emitted (its ce_source is not the step the topology says emits it):
	// not handled, so that a lone mid-saga event starts nothing.
	OutcomeOrphan = "orphan"
)

// stepMetrics are the step's series. Several steps in one process (troupe
// dev) share the collectors and differ by the app and step labels.
type stepMetrics struct {
	events         *prometheus.CounterVec
	handler        prometheus.Observer
	commit         prometheus.Observer
	aborts         prometheus.Counter
	restoreRecords prometheus.Counter
	restoreSeconds prometheus.Counter
	restoring      prometheus.Gauge
	timers         *intervalCounter
	expired        *intervalCounter
	lag            *prometheus.GaugeVec

	processed, duplicate, ignored, failed *intervalCounter
	// withoutID counts events that arrived without a ce_id header.
	withoutID *intervalCounter
	// Retries count attempts as they happen; dead letters and parked
	// events what an interval committed (retry.go, park.go).
	retries                   prometheus.Counter
	deadLetters, parkedEvents *intervalCounter
	parked                    prometheus.Gauge
	// counted are the interval counters, and outcomes the interval's
	// counts of the other outcomes (moved, misplaced, orphan).
	counted   []*intervalCounter
	outcomes  map[string]float64
	app, step string
}

// intervalCounter is a counter of the work of a commit interval: its
// increments wait for the interval to commit, and are dropped if it does
// not (an aborted interval's records are handled again, and counted then),
// so that the series count what was done once. Loop only.
type intervalCounter struct {
	prometheus.Counter
	n float64
}

// Inc counts one, once the interval commits.
func (c *intervalCounter) Inc() { c.n++ }

// committed adds the interval's counts to the series (the interval
// committed) or drops them.
func (m *stepMetrics) committed(ok bool) {
	for _, c := range m.counted {
		if ok && c.n > 0 {
			c.Counter.Add(c.n)
		}
		c.n = 0
	}
	for outcome, n := range m.outcomes {
		if ok {
			m.events.WithLabelValues(m.app, m.step, outcome).Add(n)
		}
		delete(m.outcomes, outcome)
	}
}

func newStepMetrics(reg prometheus.Registerer, app, step string) *stepMetrics {
	if reg == nil {
		reg = prometheus.NewRegistry() // a private sink
	}
	labels := []string{"app", "step"}
	events := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "events_total",
		Help: "Input records by outcome: processed, duplicate (redelivered or a known ce_id), ignored (no handler), error (dead-lettered), parked (behind a dead letter of its instance).",
	}, append(labels, "outcome")))
	handler := metrics.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "handler_seconds",
		Help:    "Time in the user's handler per event.",
		Buckets: []float64{1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 5e-2, 0.25, 1, 5},
	}, labels))
	commit := metrics.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "commit_seconds",
		Help:    "Time to commit one interval: end the transaction (exactly-once) or flush and commit offsets (at-least-once).",
		Buckets: []float64{1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 10},
	}, labels))
	aborts := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "transaction_aborts_total",
		Help: "Transactions aborted (rebalance, failed record, produce error); their input is processed again.",
	}, labels))
	restoreRecords := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "restore_records_total",
		Help: "Changelog records restored into the local state store.",
	}, labels))
	restoreSeconds := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "restore_seconds_total",
		Help: "Time spent restoring partitions from the changelog.",
	}, labels))
	restoring := metrics.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "restoring_partitions",
		Help: "Partitions being restored; the step is not ready while this is above 0.",
	}, labels))
	retries := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "retries_total",
		Help: "Handler failures retried in place (each retry counts once).",
	}, labels))
	deadLetters := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "dead_letters_total",
		Help: "Records written to the step's dead-letter topic.",
	}, labels))
	parked := metrics.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "parked_events",
		Help: "Events parked behind a dead letter of their instance, in the partitions this process holds; they run once the dead letter is replayed or discarded.",
	}, labels))
	timers := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "timers_fired_total",
		Help: "Durable timers fired.",
	}, labels))
	expired := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "instances_expired_total",
		Help: "Instances deleted from the store (and the changelog) after their retention (Context.Expire, Saga.Retention).",
	}, labels))
	lag := metrics.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "consumer_lag",
		Help: "Records behind the end of each input partition, as of the last poll or fetch request; transaction markers are not lag, so a step that has consumed everything reads 0.",
	}, append(labels, "topic", "partition")))

	withoutID := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "step", Name: "events_without_id_total",
		Help: "Input events without a ce_id header: their id is derived from their place, so a redelivery is dropped but a producer's retry (a second record) is not recognised.",
	}, labels))

	counted := func(c prometheus.Counter) *intervalCounter { return &intervalCounter{Counter: c} }
	m := &stepMetrics{
		withoutID:      counted(withoutID.WithLabelValues(app, step)),
		events:         events,
		handler:        handler.WithLabelValues(app, step),
		commit:         commit.WithLabelValues(app, step),
		aborts:         aborts.WithLabelValues(app, step),
		restoreRecords: restoreRecords.WithLabelValues(app, step),
		restoreSeconds: restoreSeconds.WithLabelValues(app, step),
		restoring:      restoring.WithLabelValues(app, step),
		timers:         counted(timers.WithLabelValues(app, step)),
		expired:        counted(expired.WithLabelValues(app, step)),
		lag:            lag,
		retries:        retries.WithLabelValues(app, step),
		deadLetters:    counted(deadLetters.WithLabelValues(app, step)),
		parked:         parked.WithLabelValues(app, step),
		outcomes:       make(map[string]float64),
		app:            app,
		step:           step,
	}
	m.processed = counted(events.WithLabelValues(app, step, OutcomeProcessed))
	m.duplicate = counted(events.WithLabelValues(app, step, OutcomeDuplicate))
	m.ignored = counted(events.WithLabelValues(app, step, OutcomeIgnored))
	m.failed = counted(events.WithLabelValues(app, step, OutcomeError))
	m.parkedEvents = counted(events.WithLabelValues(app, step, OutcomeParked))
	m.counted = []*intervalCounter{m.processed, m.duplicate, m.ignored, m.failed, m.parkedEvents,
		m.withoutID, m.deadLetters, m.timers, m.expired}
	return m
}

func (m *stepMetrics) setLag(topic string, p int32, lag int64) {
	m.lag.WithLabelValues(m.app, m.step, topic, strconv.Itoa(int(p))).Set(float64(lag))
}

// lagFn is the group client's kgo.ConsumePreferringLagFn. franz-go calls
// it as it writes each fetch request, with each partition's high watermark
// less the offset it fetches next. Unlike the offset after the last record
// returned (what admit sets at each poll), that offset has stepped over the
// markers that end transactions, which a read_committed consumer is never
// handed: on an idle input written by transactions, lag from records alone
// stayed at 1 for good. The next fetch request after a poll (within the
// fetch's max wait on an idle input) sets it right. It changes no fetch
// order.
func (m *stepMetrics) lagFn(lag map[string]map[int32]int64, _ []string, _ map[string][]int32) ([]string, map[string][]int32) {
	for topic, ps := range lag {
		for p, l := range ps {
			m.setLag(topic, p, l)
		}
	}
	return nil, nil
}

func (m *stepMetrics) dropLag(topic string, p int32) {
	m.lag.DeleteLabelValues(m.app, m.step, topic, strconv.Itoa(int(p)))
}

// memoryCollector reports the state stores' memory,
// troupe_state_memory_bytes{app,step,kind}: kind memtables (Pebble's
// memtable arenas, up to two of Options.MemTableSize) and block_cache (what
// its cache holds, up to Options.CacheSize). Both are bounded; a soak tells
// them from growth elsewhere. One collector per registry; each runtime adds
// its store's reader.
type memoryCollector struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	read map[[2]string]func() (memtables, cache int64)
}

func newMemoryCollector() *memoryCollector {
	return &memoryCollector{
		desc: prometheus.NewDesc(metrics.Namespace+"_state_memory_bytes",
			"Memory of the step's local state store by kind: memtables (Pebble's memtable arenas, at most two of 32 MiB by default) and block_cache (at most 64 MiB by default).",
			[]string{"app", "step", "kind"}, nil),
		read: map[[2]string]func() (int64, int64){},
	}
}

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, read := range c.read {
		mem, cache := read()
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(mem), k[0], k[1], "memtables")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(cache), k[0], k[1], "block_cache")
	}
}

func (c *memoryCollector) add(app, step string, read func() (int64, int64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read[[2]string{app, step}] = read
}
