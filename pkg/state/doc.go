// Package state is a step's local state: a Pebble store, the changelog that
// mirrors every write to Kafka, and the restore that rebuilds the store from
// it (README: Writing a step).
//
// One store per step process holds every partition the process owns, each
// partition a contiguous key range under a 5-byte prefix (see keys.go for
// the layout: instance records, timers ordered by fire time, a timer index,
// applied input offsets, parked events; and per partition, local meta with
// the changelog offset the state reflects). One store rather than one per
// partition: a commit interval that touched eight partitions is one atomic
// batch and one write, and all partitions share one block cache and one set
// of background compactions; a partition is still dropped or restored on its
// own by its key range. Measured on 2 cores (BenchmarkCommit, medians):
// the two layouts are level without sync (~400k events/s), and one store is
// 2.3x faster with sync (one fsync per commit, not eight); a store per
// partition also multiplies memtables and caches by the partition count.
//
// A Txn collects one commit interval's writes in an indexed batch (reads see
// the interval's own writes) and lists the changed keys once each, for the
// changelog. The step applies it only after the Kafka transaction carrying
// the same changes to the changelog has committed, together with the
// changelog offsets it reflects: the store is never ahead of Kafka.
//
// That invariant is also why the store writes its WAL without syncing it
// (see Durability for the measurements and the argument).
//
// A Restorer consumes a changelog partition read_committed from the store's
// offset to the end (waiting for any open transaction on it to finish) in
// large batches, logging progress with records/s and ETA.
package state
