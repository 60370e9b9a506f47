package step

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/pkg/kafka"
)

// Guarantee is the delivery guarantee of a step.
type Guarantee int

const (
	// ExactlyOnce (the default) consumes, handles and produces outputs and
	// changelog records in one Kafka transaction per commit interval: every
	// input affects state and outputs exactly once, as seen by read_committed
	// consumers. It cannot cover effects outside Kafka (an HTTP call in a
	// handler runs again if its transaction aborts).
	ExactlyOnce Guarantee = iota
	// AtLeastOnce produces without transactions, then applies state, then
	// commits offsets. After a crash, inputs are redelivered: state stays
	// exact (redelivered and duplicate events are dropped by offset and by
	// ce_id), but outputs of the interval may be produced twice (with the
	// same ce_id, so a downstream step drops the copy). Faster.
	AtLeastOnce
)

func (g Guarantee) String() string {
	switch g {
	case ExactlyOnce:
		return "exactly_once"
	case AtLeastOnce:
		return "at_least_once"
	}
	return fmt.Sprintf("Guarantee(%d)", int(g))
}

// ParseGuarantee parses "exactly_once" or "at_least_once" (as in the
// topology file and --guarantee).
func ParseGuarantee(s string) (Guarantee, error) {
	switch strings.ReplaceAll(strings.ToLower(s), "-", "_") {
	case "exactly_once", "eos", "":
		return ExactlyOnce, nil
	case "at_least_once", "alos":
		return AtLeastOnce, nil
	}
	return 0, fmt.Errorf("unknown guarantee %q (use exactly_once or at_least_once)", s)
}

// GroupProtocol chooses the consumer group protocol.
type GroupProtocol string

const (
	// GroupProtocolAuto (the default) uses the KIP-848 consumer protocol when
	// every broker offers it, else the classic one.
	GroupProtocolAuto GroupProtocol = ""
	// GroupProtocolConsumer is KIP-848: the broker assigns partitions (its
	// range assignor, which keeps partition N of every input together),
	// incrementally, without stopping the group. Kafka 4.0+.
	GroupProtocolConsumer GroupProtocol = "consumer"
	// GroupProtocolClassic is the classic protocol with troupe's cooperative
	// co-partitioning balancer (see Balancer).
	GroupProtocolClassic GroupProtocol = "classic"
)

// Config is how a step runs. Kafka, Codec and StateDir are required; every
// other field has a default.
type Config struct {
	// Kafka is how to reach the cluster.
	Kafka kafka.Config
	// Codec encodes and decodes events; an *avro.Serde.
	Codec Codec
	// StateDir holds the step's local state store. It belongs to this one
	// step: another step's dir is refused.
	StateDir string

	// Guarantee defaults to ExactlyOnce.
	Guarantee Guarantee
	// CommitInterval is how often the step commits: one transaction (or one
	// offset commit) per interval. Default 100 ms. Longer means fewer, larger
	// transactions (more throughput) and later outputs.
	CommitInterval time.Duration
	// TransactionTimeout is how long the broker waits for a transaction of
	// this step before aborting it (if the process died). Default 10 s.
	// Under ExactlyOnce, CommitInterval + HandlerTimeout must stay within
	// 80% of it, so that every interval commits in time.
	TransactionTimeout time.Duration
	// Concurrency is how many handler calls of different instances run at
	// once (one instance's records always run one at a time, in offset
	// order). 0 takes the step's Concurrency option, else the default, 16;
	// 1 runs every record one after another. At most 10,000.
	Concurrency int
	// HandlerTimeout bounds one handler call: its Context.Context() ends
	// then, and a call past it is a failed attempt under the retry policy.
	// Default 5 s. A handler that ignores its context is given up 100 ms
	// after it (and at shutdown, the step exits without waiting longer).
	HandlerTimeout time.Duration
	// GroupProtocol defaults to GroupProtocolAuto.
	GroupProtocol GroupProtocol
	// SessionTimeout is how long the group waits for a silent member before
	// moving its partitions, with the classic protocol (with KIP-848 the
	// broker sets it: group.consumer.session.timeout.ms). Default 45 s.
	SessionTimeout time.Duration
	// InstanceID names this process in its transactional id. Default: an id
	// kept in the state dir, so that a restarted process fences its own
	// unfinished transaction at once. Two processes must never share one.
	InstanceID string
	// DedupeWindow is how many recent event ids each instance remembers, to
	// drop an event produced twice. Default 16.
	DedupeWindow int
	// MaxPollRecords bounds the records taken per poll. Default 10,000.
	MaxPollRecords int
	// Saga is the saga the step belongs to; nil for none. With it the
	// runtime consumes the saga's ended topic and keeps the compensation
	// barrier (see Saga).
	Saga *Saga
	// Retry is how a failing record is retried and, past its attempts,
	// dead-lettered; the zero value is the default policy (see RetryPolicy).
	Retry RetryPolicy

	// Tracing, when set, traces the step (OpenTelemetry): each handler
	// call is a span, child of its input's traceparent, and its outputs
	// carry the span's (see trace.go; package tracing builds one from the
	// OTEL_* environment). Nil, the default, traces nothing.
	Tracing trace.TracerProvider

	// Registerer gets the step's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// Logger is the step's logger; its children carry app, step, topic and
	// partition.
	Logger zerolog.Logger
}

// Concurrency limits.
const (
	// DefaultConcurrency is Config.Concurrency when neither the config nor
	// the step's Concurrency option sets it.
	DefaultConcurrency = 16
	// MaxConcurrency is the highest Config.Concurrency.
	MaxConcurrency = 10_000
)

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Codec == nil {
		errs = append(errs, errors.New("no codec: set Config.Codec (an *avro.Serde)"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("no state dir: set Config.StateDir (--state-dir)"))
	}
	if c.Guarantee != ExactlyOnce && c.Guarantee != AtLeastOnce {
		errs = append(errs, fmt.Errorf("unknown guarantee %d (use step.ExactlyOnce or step.AtLeastOnce)", c.Guarantee))
	}
	switch c.GroupProtocol {
	case GroupProtocolAuto, GroupProtocolConsumer, GroupProtocolClassic:
	default:
		errs = append(errs, fmt.Errorf("unknown group protocol %q (use consumer or classic, or leave empty)", c.GroupProtocol))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"CommitInterval", c.CommitInterval}, {"TransactionTimeout", c.TransactionTimeout}, {"SessionTimeout", c.SessionTimeout}, {"HandlerTimeout", c.HandlerTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	if c.Concurrency < 0 || c.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("Concurrency %d is out of range (1 to %d; 0 for the default, %d)", c.Concurrency, MaxConcurrency, DefaultConcurrency))
	}
	if d := c.withDefaults(); d.Guarantee == ExactlyOnce && (d.CommitInterval+d.HandlerTimeout)*5 > d.TransactionTimeout*4 {
		errs = append(errs, fmt.Errorf("CommitInterval %s + HandlerTimeout %s must stay within 80%% of TransactionTimeout %s, or an interval could outlive its transaction (lower HandlerTimeout, --handler-timeout on troupe run, or CommitInterval, or raise TransactionTimeout)", d.CommitInterval, d.HandlerTimeout, d.TransactionTimeout))
	}
	if c.DedupeWindow < 0 || c.MaxPollRecords < 0 {
		errs = append(errs, errors.New("DedupeWindow and MaxPollRecords must not be negative"))
	}
	if err := c.Retry.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.CommitInterval == 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = 16
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 5 * time.Second
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 10_000
	}
	c.Retry = c.Retry.withDefaults()
	return c
}
