// Package step is how a troupe step is written and run: a typed handler per
// input event type, per-instance state, emitted events and durable timers,
// run as a Kafka consumer group with exactly-once processing (README: Writing a step).
//
//	s := step.New[Payment]("orders", "payment", step.Inputs("orders"))
//	step.Handle(s, func(c *step.Context[Payment], o orders.OrderPlaced) error {
//		p, _ := c.State() // this instance's state (instance = record key = saga id)
//		p.Charged += o.AmountCents
//		c.SetState(p)
//		if err := c.After(30*time.Second, "remind", "payments", orders.PaymentReminder{OrderID: o.OrderID}); err != nil {
//			return err
//		}
//		return c.Emit("payments", orders.PaymentAuthorized{OrderID: o.OrderID})
//	})
//	err := step.Run(ctx, s, step.Config{Kafka: kcfg, Codec: serde, StateDir: "/var/lib/troupe/payment"})
//
// c.Cancel("remind") cancels the timer; c.Meta() is the input's metadata,
// c.Key() its instance, c.Logger() a logger with its coordinates.
//
// A handler's effects (state, emitted events, timers) apply only if it
// returns nil, and together with the input's offset. See Example.
//
// # How it runs
//
// A step is one consumer group, <app>.<step>, over its inputs and its retry
// topic <app>.<step>.retry (created if missing). Partition N of every input
// is one task: the group protocol keeps it on one member (KIP-848's range
// assignor when the brokers offer it, else this package's cooperative
// co-partitioning Balancer). On assignment a task restores its state from
// the compacted changelog <app>.<step>.changelog before it sees a record;
// Runtime.Ready is false meanwhile.
//
// One loop drives all tasks, one interval (one transaction) after another:
//
//	ExactlyOnce (default):  begin txn -> fire due timers -> poll, handle (concurrently),
//	                        produce outputs -> produce changed state keys to the changelog
//	                        -> commit txn (offsets included) -> apply the store batch with
//	                        the changelog offsets it reflects. Abort = drop the batch.
//	AtLeastOnce:            timers -> poll, handle, produce -> changelog -> flush
//	                        -> apply the store batch (with the input offsets reached)
//	                        -> commit offsets.
//
// Within an interval, handlers of different instances run concurrently, up
// to Config.Concurrency (default 16; the step's Concurrency option); one
// instance's records run one at a time, in offset order, and every effect
// enters the transaction from the loop, in one order per instance (see
// exec.go). An interval starts handlers for at most Config.CommitInterval
// (100 ms), each call bounded by Config.HandlerTimeout (5 s), so it always
// commits within the transaction timeout; it ends as soon as all it fetched
// is handled and nothing more is buffered (but not before the last commit's
// duration), so latency follows the work.
//
// Local state is thus never ahead of Kafka. After a crash it may be behind,
// and the restore on the next assignment catches it up; it never needs a
// wipe (compare KIP-892). Redelivered records are recognised by the input
// offsets kept in the state (and changelog), and an event produced twice by
// its ce_id (a bounded window per instance), so state is exact under both
// guarantees; only at-least-once outputs can repeat, with the same ce_id.
//
// # When a record fails
//
// A handler error is retried in place (Config.Retry, a RetryPolicy): the
// record's partition stops at it and pauses for the backoff, 100 ms
// doubling up to 5 s by default, while the other partitions go on and
// commit; the interval commits the partition's offsets up to the failing
// record, not past it, so a crash meanwhile loses nothing. A Permanent
// error, a panic and an undecodable value skip the retries. After the last
// attempt (5 by default) the record goes to the step's dead-letter topic
// <app>.<step>.dlq, in the same transaction, with its key, value and
// headers and the troupe_dlq_* provenance (package dlq), and the partition
// moves on.
//
// Order within an instance survives: once an instance has a dead letter,
// its later events are parked in the state store (key kind q, in the
// changelog like all state) while the partition's other instances flow.
// A replay of the dead letter into the step's retry topic (`troupe dlq
// replay`), once it runs, or a discard marker (`troupe dlq discard`)
// releases them, and they run in their original order (park.go says how).
// A second replay is a duplicate (same ce_id) and changes nothing.
//
// # Sagas and raw events
//
// With Config.Saga (saga.ForStep builds it from a topology) the runtime
// keeps a saga's rules for the step: it consumes the saga's ended topic,
// drops the inputs of ended instances and cancels their timers, and answers
// compensation commands itself when the handler must not run (a null or a
// repeated compensation); see Saga. HandleRaw, OnTimer, Context.SetTimer
// and Context.EmitRaw serve steps that do not know their events' Go types,
// like the saga coordinator; Watch hands it the records of other steps'
// DLQ and retry topics as they are.
//
// With Config.Tracing (package tracing builds it from the OTEL_*
// environment) each handler call is an OpenTelemetry span, child of its
// input's traceparent through franz-go's kotel receive span, and its
// outputs carry the span on; Context.TraceID names the trace (trace.go).
//
// Metrics (troupe_step_*, labelled app and step): events_total{outcome},
// handler_seconds, commit_seconds, transaction_aborts_total,
// restore_records_total, restore_seconds_total, restoring_partitions,
// timers_fired_total, consumer_lag{topic,partition}, retries_total,
// dead_letters_total, parked_events, instances_expired_total. The counters
// of work (events, timers, dead letters, expiries) count what an interval
// committed, so an aborted interval's records, handled again, count once.
// Each dead letter is one error log line with its saga, topic, partition,
// offset and error.
package step
