// Package dlq is troupe's dead-letter contract, shared by the
// step runtime that writes dead letters and honours replays and discards,
// and by the `troupe dlq` commands that operate on them.
//
// A step that gives up on a record writes it to <app>.<step>.dlq with its
// key, value and headers unchanged plus the provenance headers
// (NewDeadLetter):
//
//	troupe_dlq_topic      topic the failed record was consumed from
//	troupe_dlq_partition  its partition (decimal)
//	troupe_dlq_offset     its offset (decimal)
//	troupe_dlq_step       the step that failed
//	troupe_dlq_error      the last error (at most MaxErrorBytes)
//	troupe_dlq_attempts   how many times the handler ran (decimal)
//	troupe_dlq_failed_at  when the step gave up (RFC 3339, UTC)
//
// A dead letter always fits in MaxBytes (a bit under franz-go's default
// batch limit of 1,000,012 bytes): a dead letter the producer refused would
// abort the step's transaction again and again. When the failed record is
// too big, its value is cut, then its big headers, then its other headers
// but the CloudEvents ones, then its key; the provenance headers stay, and
// one troupe_dlq_cut header per part cut says what it was, its size and its
// SHA-256 (Cut). A replay of such a dead letter (Queue.Replay) reads the cut
// parts back from the source record, checked against the hashes, and fails
// naming the source's coordinates once its topic no longer retains it.
//
// The instance's later events are then parked until an operator either
// replays the dead letter or discards it. Both write one record to the
// step's own retry topic, <app>.<step>.retry, which only that step consumes,
// on the partition number the failed record had (so the task that owns the
// instance sees it), keyed by the instance:
//
//   - A replay (Replay) is the original event again: key, value and the
//     original headers, without the troupe_dlq_* provenance, plus
//     troupe_replay_count (1 on the first replay, incremented from the
//     count the dead letter carried) and troupe_replayed_from_topic,
//     _partition and _offset naming the dead letter in the DLQ. If the
//     replay fails again, its new dead letter keeps these headers, so the
//     chain of attempts can be followed back.
//
//   - A discard (Discard) is a marker with no value: troupe_discard=true,
//     troupe_discard_event_id and troupe_discard_event_type (the discarded
//     event's ce_id and ce_type, when it had them) and the
//     troupe_replayed_from_* headers naming the dead letter.
//
// The runtime handles a replay like any input event (deduplicated by ce_id:
// replaying twice changes nothing) and, once it succeeds, runs the
// instance's parked events in order. A discard releases the parked events
// without running the discarded one, if the instance's outstanding dead
// letter is that event (same ce_id; an event without ce_id matches by key
// alone). Markers for other events are ignored.
//
// Queue reads a dead-letter topic (read_committed, start to end) and
// replays or discards a selection of it. A dead letter is settled once: the
// retry topic says which were replayed or discarded (Outcomes), and Replay
// and Discard skip those unless SendOptions.Force. See ExampleNewDeadLetter.
package dlq
