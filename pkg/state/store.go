package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// FormatVersion is the layout of keys and records this package writes. A
// store of another format is refused (run `troupe state rebuild`).
const FormatVersion = 1

// MarkerFile names the file in a state dir that says whose store it is.
const MarkerFile = "TROUPE-STATE"

// Durability says what the store does to survive a crash of the process.
//
// Under exactly-once Kafka is the source of truth: every batch the store
// applies carries the changelog offset it reflects, and Pebble recovers a
// prefix of applied batches, so after any crash the store is at worst
// behind its changelog, never inconsistent with its offset, never ahead;
// the next restore catches it up. Syncing therefore buys nothing. Measured
// on 2 cores (BenchmarkCommit, 8 partitions x 64 events per commit, medians
// of 4): no WAL 405k events/s, WAL without sync 372k, WAL synced per commit
// 319k. The counting step end to end (BenchmarkCountStep) shows no
// difference between no WAL and an unsynced WAL within run-to-run noise:
// Kafka, not Pebble, bounds it. The unsynced WAL wins on what it saves: a
// killed process (the common crash) loses nothing the OS has not yet
// written, so it restarts without replaying a memtable's worth of changelog.
type Durability int

const (
	// DurabilityWAL (the default) writes a write-ahead log without syncing
	// it: survives a process crash with nothing to restore; after a machine
	// crash the restore catches up.
	DurabilityWAL Durability = iota
	// DurabilityNone writes no write-ahead log: a process crash loses the
	// writes since the last memtable flush, and the restore brings them back.
	DurabilityNone
	// DurabilitySync syncs the write-ahead log on every commit. It costs
	// ~15% of the store's throughput and buys nothing the changelog does not
	// already give; for stores used without a changelog.
	DurabilitySync
)

// Options configures Open.
type Options struct {
	// App and Step name the step the store belongs to; required. Opening the
	// store of another step is refused.
	App, Step string
	// Durability defaults to DurabilityWAL; see Durability for why.
	Durability Durability
	// CacheSize is the block cache in bytes; default 64 MiB.
	CacheSize int64
	// MemTableSize is the size of one memtable; default 32 MiB.
	MemTableSize uint64
	// Logger receives Pebble's notices (at debug) and errors.
	Logger zerolog.Logger
}

// Store is the local state of one step process: one Pebble database for all
// the partitions the process owns or has owned, each partition a contiguous
// key range (see keys.go). It is safe for concurrent use; a Txn is not.
type Store struct {
	db       *pebble.DB
	dir      string
	id       identity
	wiped    string
	writeOpt *pebble.WriteOptions
	log      zerolog.Logger
}

type identity struct {
	Format     int    `json:"format"`
	App        string `json:"app"`
	Step       string `json:"step"`
	InstanceID string `json:"instance_id"`
}

// IdentityError means a state dir belongs to another step or holds another
// format: the store refuses to open it rather than guess.
type IdentityError struct {
	Dir    string
	Reason string
}

func (e *IdentityError) Error() string {
	return fmt.Sprintf("state dir %s %s", e.Dir, e.Reason)
}

// Open opens (or creates) the store in dir. A dir that holds a store of
// another step, of another format, or files that are not a store, is an
// *IdentityError. A store that Pebble finds corrupt is wiped and reopened
// empty: every partition then restores from the changelog's start, and
// Wiped says why.
func Open(dir string, o Options) (*Store, error) {
	if o.App == "" || o.Step == "" {
		return nil, errors.New("state: open needs the app and step names")
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 32 << 20
	}
	s := &Store{dir: dir, log: o.Logger.With().Str("state_dir", dir).Logger()}
	rebuild := fmt.Sprintf("(choose another --state-dir, or wipe and restore it with `troupe state rebuild --app %s --step %s --state-dir %s`)", o.App, o.Step, dir)

	id, err := readIdentity(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read state dir %s: %w", dir, err)
		}
		if len(entries) > 0 {
			return nil, &IdentityError{Dir: dir, Reason: "is not empty and is not a troupe state store (no " + MarkerFile + " file) " + rebuild}
		}
		id = identity{Format: FormatVersion, App: o.App, Step: o.Step, InstanceID: uuid.NewString()}
	case err != nil:
		s.log.Warn().Err(err).Msg("state marker unreadable; wiping the store, partitions restore from the changelog")
		s.wiped = "marker unreadable: " + err.Error()
		if id.InstanceID == "" {
			id.InstanceID = uuid.NewString()
		}
		id = identity{Format: FormatVersion, App: o.App, Step: o.Step, InstanceID: id.InstanceID}
		if err := wipeDir(dir); err != nil {
			return nil, err
		}
	case id.Format != FormatVersion:
		return nil, &IdentityError{Dir: dir, Reason: fmt.Sprintf("holds state format %d, this troupe reads format %d %s", id.Format, FormatVersion, rebuild)}
	case id.App != o.App || id.Step != o.Step:
		return nil, &IdentityError{Dir: dir, Reason: fmt.Sprintf("belongs to step %s/%s, not %s/%s %s", id.App, id.Step, o.App, o.Step, rebuild)}
	}
	s.id = id
	// The marker goes first, so that a crash during creation leaves a dir
	// that is recognisably ours.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	if err := writeIdentity(dir, id); err != nil {
		return nil, err
	}
	s.db, err = s.openDB(o)
	if err != nil && pebble.IsCorruptionError(err) {
		s.log.Warn().Err(err).Msg("state store corrupt; wiping it, partitions restore from the changelog")
		s.wiped = "corrupt: " + err.Error()
		if err := wipeDir(dir); err != nil {
			return nil, err
		}
		if err := writeIdentity(dir, id); err != nil {
			return nil, err
		}
		s.db, err = s.openDB(o)
	}
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w (is another process using it?)", dir, err)
	}
	s.writeOpt = pebble.NoSync
	if o.Durability == DurabilitySync {
		s.writeOpt = pebble.Sync
	}
	return s, nil
}

func (s *Store) openDB(o Options) (*pebble.DB, error) {
	cache := pebble.NewCache(o.CacheSize)
	defer cache.Unref()
	opts := &pebble.Options{
		// The plain file system, not Pebble's default disk-health wrapper:
		// its ticker goroutine outlives an Open that fails (a corrupt store
		// we then wipe), and a slow disk shows in the commit metrics anyway.
		FS:                 vfs.Default,
		Cache:              cache,
		DisableWAL:         o.Durability == DurabilityNone,
		MemTableSize:       o.MemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{s.log.With().Str("component", "pebble").Logger()},
	}
	return pebble.Open(s.dir, opts)
}

// Dir is the directory of the store.
func (s *Store) Dir() string { return s.dir }

// InstanceID identifies this store across restarts of its process: the
// step's transactional id derives from it, so that a restarted process
// fences its own unfinished transaction at once instead of waiting for it to
// time out.
func (s *Store) InstanceID() string { return s.id.InstanceID }

// Wiped says why Open wiped the store, or "" if it did not.
func (s *Store) Wiped() string { return s.wiped }

// Memory is what the store holds in memory: its memtables' arenas and its
// block cache's contents, in bytes.
func (s *Store) Memory() (memtables, cache int64) {
	m := s.db.Metrics()
	return int64(m.MemTable.Size), m.BlockCache.Size
}

// Close flushes the memtables (with DurabilityNone they are the only copy
// of the latest writes) and closes the store.
func (s *Store) Close() error {
	ferr := s.db.Flush()
	cerr := s.db.Close()
	if err := errors.Join(ferr, cerr); err != nil {
		return fmt.Errorf("close state store %s: %w", s.dir, err)
	}
	return nil
}

// ChangelogOffset is the changelog offset partition p's state reflects: the
// offset a restore continues from. 0 for a partition never stored.
func (s *Store) ChangelogOffset(p int32) (int64, error) {
	v, ok, err := s.get(metaKey(p, metaChangelog))
	if err != nil || !ok {
		return 0, err
	}
	off, err := DecodeOffset(v)
	if err != nil {
		return 0, fmt.Errorf("changelog offset of partition %d: %w", p, err)
	}
	return off, nil
}

// Written is when partition p's state last caught up with the changelog
// (a commit or a restore); zero if never.
func (s *Store) Written(p int32) (time.Time, error) {
	v, ok, err := s.get(metaKey(p, metaWritten))
	if err != nil || !ok {
		return time.Time{}, err
	}
	ns, err := DecodeOffset(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("write time of partition %d: %w", p, err)
	}
	return time.Unix(0, ns), nil
}

// Get returns the value of state key k in partition p.
func (s *Store) Get(p int32, k []byte) ([]byte, bool, error) {
	return s.get(dbKey(p, k))
}

func (s *Store) get(k []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("state get: %w", err)
	}
	defer closer.Close()
	return slices.Clone(v), true, nil
}

// Scan calls fn for every state key of partition p that starts with prefix,
// in key order. key and value are valid only during the call.
func (s *Store) Scan(p int32, prefix []byte, fn func(key, value []byte) error) error {
	lower := dbKey(p, prefix)
	_, upper := partitionRange(p)
	if len(prefix) > 0 {
		upper = prefixEnd(lower)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("state scan: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("state scan: %w", err)
		}
		if err := fn(stateKey(it.Key()), v); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// WipePartition deletes everything partition p holds, state and meta.
func (s *Store) WipePartition(p int32) error {
	b := s.db.NewBatch()
	defer b.Close()
	lo, hi := partitionRange(p)
	_ = b.DeleteRange(lo, hi, nil)
	lo, hi = metaRange(p)
	_ = b.DeleteRange(lo, hi, nil)
	if err := b.Commit(s.writeOpt); err != nil {
		return fmt.Errorf("wipe partition %d of %s: %w", p, s.dir, err)
	}
	return nil
}

// Partitions lists the partitions that have a changelog offset in the store.
func (s *Store) Partitions() ([]int32, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixMeta}, UpperBound: []byte{prefixMeta + 1}})
	if err != nil {
		return nil, err
	}
	var ps []int32
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) >= 5 && string(k[5:]) == metaChangelog {
			ps = append(ps, int32(uint32(k[1])<<24|uint32(k[2])<<16|uint32(k[3])<<8|uint32(k[4])))
		}
	}
	return ps, it.Close()
}

// Remove deletes the store in dir. It refuses a dir that is not a troupe
// state store, so that a wrong --state-dir cannot delete someone's files.
func Remove(dir string) error {
	if _, err := readIdentity(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			entries, rerr := os.ReadDir(dir)
			if errors.Is(rerr, fs.ErrNotExist) || (rerr == nil && len(entries) == 0) {
				return nil
			}
			return &IdentityError{Dir: dir, Reason: "is not a troupe state store (no " + MarkerFile + " file); not removing it"}
		}
		// An unreadable marker is a store too broken to keep.
	}
	// Holding Pebble's lock proves that no step process has the store open.
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err == nil {
		l, err := vfs.Default.Lock(filepath.Join(dir, "LOCK"))
		if err != nil {
			return fmt.Errorf("state dir %s is in use by a running process (stop the step first): %w", dir, err)
		}
		defer l.Close()
	}
	return wipeDir(dir)
}

func readIdentity(dir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("parse %s: %w", filepath.Join(dir, MarkerFile), err)
	}
	return id, nil
}

func writeIdentity(dir string, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, MarkerFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state marker: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, MarkerFile)); err != nil {
		return fmt.Errorf("write state marker: %w", err)
	}
	return nil
}

// wipeDir empties dir but keeps it (it may be a mount point).
func wipeDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wipe state dir %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("wipe state dir %s: %w", dir, err)
		}
	}
	return nil
}

// pebbleLogger sends Pebble's chatter to debug and its errors to error.
type pebbleLogger struct{ l zerolog.Logger }

func (p pebbleLogger) Infof(format string, args ...any)  { p.l.Debug().Msgf(format, args...) }
func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error().Msgf(format, args...) }
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error().Msgf(format, args...)
	panic(fmt.Sprintf("pebble: "+format, args...))
}
