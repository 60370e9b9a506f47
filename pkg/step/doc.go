// Package step is how a troupe step is written and run: a typed handler per
// input event type, per-instance state, emitted events and durable timers,
// run as a Kafka consumer group with exactly-once processing (DESIGN §4).
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
// One loop drives all tasks. Every CommitInterval (100 ms) it ends one unit
// of work:
//
//	ExactlyOnce (default):  begin txn -> poll, handle, produce outputs -> fire due timers
//	                        -> produce changed state keys to the changelog -> commit txn
//	                        (offsets included) -> apply the store batch with the changelog
//	                        offsets it reflects. Abort = drop the batch.
//	AtLeastOnce:            poll, handle, produce -> fire timers -> changelog -> flush
//	                        -> apply the store batch (with the input offsets reached)
//	                        -> commit offsets.
//
// Local state is thus never ahead of Kafka. After a crash it may be behind,
// and the restore on the next assignment catches it up; it never needs a
// wipe (compare KIP-892). Redelivered records are recognised by the input
// offsets kept in the state (and changelog), and an event produced twice by
// its ce_id (a bounded window per instance), so state is exact under both
// guarantees; only at-least-once outputs can repeat, with the same ce_id.
//
// A record that fails (an error, a panic, an undecodable value) stops its
// partition: it is logged with its coordinates, counted, reported by Ready,
// and never skipped; a restart or rebalance tries it again. Retries and
// dead letters come with the DLQ issue; IsPermanent and RecordError are
// their vocabulary already.
//
// Metrics (troupe_step_*, labelled app and step): events_total{outcome},
// handler_seconds, commit_seconds, transaction_aborts_total,
// restore_records_total, restore_seconds_total, restoring_partitions,
// timers_fired_total, consumer_lag{topic,partition}.
package step
