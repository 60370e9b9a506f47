// Package replay reads ranges of Kafka topics back for recovery (troupe replay):
// it copies a range of one topic into another, and rewinds a stopped
// consumer group so that its members reprocess a range.
//
// A range starts, in every partition, at an offset or at the first record
// at or after a time (Start), and ends at the end of the partition as it is
// when the operation begins: records written meanwhile are not part of it.
// Reading is read_committed, so aborted transactions are never copied.
//
//	        Spans                      Scan / Copy
//	topic ─────────► [start, end) per ─────────────► fn(record) / target topic
//	                 partition
//
// Copy keeps each record's key, value, headers and timestamp, and its
// partition number when the target has as many partitions as the source
// (else the key chooses, as Kafka's default partitioner does). RewindGroup
// commits new offsets for a group through kadm, and refuses while the group
// has live members (*LiveMembersError).
//
// ParseTime reads the times operators type: RFC 3339, or relative to now
// such as -1h or -2d. See ExampleParseTime.
package replay
