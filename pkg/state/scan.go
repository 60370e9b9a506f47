package state

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// ScanRange calls fn for the state keys of partition p in [lower, upper), in
// key order, until fn returns false. An empty upper means the end of the
// partition. It reads the committed store (a consistent snapshot), so it
// suits readers outside the step's loop, such as an HTTP API that pages
// through instances. key and value are valid only during the call.
func (s *Store) ScanRange(p int32, lower, upper []byte, fn func(key, value []byte) (bool, error)) error {
	lo := dbKey(p, lower)
	_, hi := partitionRange(p)
	if len(upper) > 0 {
		hi = dbKey(p, upper)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("state scan partition %d: %w", p, err)
	}
	return scanIter(it, p, fn)
}

// PrefixEnd returns the smallest key greater than every key that starts with
// prefix: the exclusive upper bound of a prefix scan (nil if there is none).
func PrefixEnd(prefix []byte) []byte { return prefixEnd(prefix) }
