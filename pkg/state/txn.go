package state

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Txn collects the state writes of one commit interval: an indexed Pebble
// batch, so that reads see the interval's own uncommitted writes, plus the
// set of keys written per partition, so that each key goes to the changelog
// once per interval with its latest value however often it changed.
//
// Nothing reaches the store until Commit. The step commits only after the
// Kafka transaction that carried the same writes to the changelog has
// committed, so the store is never ahead of Kafka; Discard drops the lot.
// A Txn is used by one goroutine.
type Txn struct {
	s     *Store
	b     *pebble.Batch
	dirty map[int32]map[string]struct{}
}

// NewTxn starts an empty transaction on the store.
func (s *Store) NewTxn() *Txn {
	return &Txn{s: s, b: s.db.NewIndexedBatch(), dirty: make(map[int32]map[string]struct{})}
}

// Get returns the value of state key k in partition p as this transaction
// sees it. The value is a copy.
func (t *Txn) Get(p int32, k []byte) ([]byte, bool, error) {
	v, closer, err := t.b.Get(dbKey(p, k))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("state get partition %d: %w", p, err)
	}
	defer closer.Close()
	return slices.Clone(v), true, nil
}

// Set writes state key k of partition p.
func (t *Txn) Set(p int32, k, v []byte) error {
	if err := t.b.Set(dbKey(p, k), v, nil); err != nil {
		return fmt.Errorf("state set partition %d: %w", p, err)
	}
	t.mark(p, k)
	return nil
}

// Delete deletes state key k of partition p.
func (t *Txn) Delete(p int32, k []byte) error {
	if err := t.b.Delete(dbKey(p, k), nil); err != nil {
		return fmt.Errorf("state delete partition %d: %w", p, err)
	}
	t.mark(p, k)
	return nil
}

func (t *Txn) mark(p int32, k []byte) {
	d := t.dirty[p]
	if d == nil {
		d = make(map[string]struct{})
		t.dirty[p] = d
	}
	d[string(k)] = struct{}{}
}

// Scan calls fn for the state keys of partition p in [lower, upper), in key
// order, as this transaction sees them, until fn returns false. fn must not
// write to the transaction; key and value are valid only during the call.
func (t *Txn) Scan(p int32, lower, upper []byte, fn func(key, value []byte) (bool, error)) error {
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: dbKey(p, lower), UpperBound: dbKey(p, upper)})
	if err != nil {
		return fmt.Errorf("state scan partition %d: %w", p, err)
	}
	return scanIter(it, p, fn)
}

// scanIter calls fn for every entry of it, with the state key, until fn
// returns false or an error, and closes it.
func scanIter(it *pebble.Iterator, p int32, fn func(key, value []byte) (bool, error)) error {
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("state scan partition %d: %w", p, err)
		}
		more, err := fn(stateKey(it.Key()), v)
		if err != nil || !more {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// Partitions lists, in order, the partitions this transaction wrote to.
func (t *Txn) Partitions() []int32 {
	ps := make([]int32, 0, len(t.dirty))
	for p := range t.dirty {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// Changes calls fn once for every state key of partition p written in this
// transaction, in key order, with its latest value; nil means deleted (a
// changelog tombstone).
func (t *Txn) Changes(p int32, fn func(key, value []byte) error) error {
	keys := make([]string, 0, len(t.dirty[p]))
	for k := range t.dirty[p] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, ok, err := t.Get(p, []byte(k))
		if err != nil {
			return err
		}
		if !ok {
			v = nil
		}
		if err := fn([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

// SetChangelogOffset records, in this transaction, that partition p's state
// reflects the changelog up to next (exclusive). It is local meta, not
// mirrored to the changelog.
func (t *Txn) SetChangelogOffset(p int32, next int64) error {
	_ = t.b.Set(metaKey(p, metaWritten), EncodeOffset(time.Now().UnixNano()), nil)
	return t.b.Set(metaKey(p, metaChangelog), EncodeOffset(next), nil)
}

// Empty reports whether the transaction holds no writes.
func (t *Txn) Empty() bool { return t.b.Empty() }

// Len is the size of the transaction's batch in bytes.
func (t *Txn) Len() int { return t.b.Len() }

// Commit applies the transaction to the store atomically and ends it.
func (t *Txn) Commit() error {
	defer t.Discard()
	if t.b.Empty() {
		return nil
	}
	if err := t.b.Commit(t.s.writeOpt); err != nil {
		return fmt.Errorf("commit state to %s: %w", t.s.dir, err)
	}
	return nil
}

// Discard drops the transaction's writes. Safe to call more than once.
func (t *Txn) Discard() {
	if t.b != nil {
		_ = t.b.Close()
		t.b = nil
	}
	t.dirty = nil
}
