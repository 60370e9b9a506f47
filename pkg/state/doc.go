// Package state is a step's local state: a Pebble store, the changelog that
// mirrors every write to Kafka, and the restore that rebuilds the store from
// it (DESIGN §4).
//
// One store per step process holds every partition the process owns, each
// partition a contiguous key range under a 5-byte prefix (see keys.go for
// the layout: instance records, timers ordered by fire time, a timer index,
// applied input offsets, parked events; and per partition, local meta with
// the changelog offset the state reflects). One store rather than one per
// partition: a commit interval that touched eight partitions is one atomic
// batch and one write, and all partitions share one block cache and one set
// of background compactions; a partition is still dropped or restored on its
// own by its key range. Measured on 2 cores (BenchmarkCommit): 8 partitions
// committed through one store are ~2x faster than through eight.
//
// A Txn collects one commit interval's writes in an indexed batch (reads see
// the interval's own writes) and lists the changed keys once each, for the
// changelog. The step applies it only after the Kafka transaction carrying
// the same changes to the changelog has committed, together with the
// changelog offsets it reflects: the store is never ahead of Kafka.
//
// That invariant is also why the store writes no WAL by default
// (DurabilityNone): a crash can only lose a suffix of applied batches,
// leaving the store behind its changelog, and the next restore continues
// from the offset the surviving state carries. Measured (BenchmarkCommit):
// no WAL is ~1.3x faster than an unsynced WAL and far faster than a synced
// one, which would buy nothing the changelog does not already give.
//
// A Restorer consumes a changelog partition read_committed from the store's
// offset to the end (waiting for any open transaction on it to finish) in
// large batches, logging progress with records/s and ETA.
package state
