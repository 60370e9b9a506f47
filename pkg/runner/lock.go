package runner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// LockFile is the file in a data dir that `troupe dev` holds locked while it
// runs, with its pid in it.
const LockFile = "troupe-dev.lock"

// errLocked means another process holds the lock; the pid it wrote, if any,
// is in the message of the error lockDataDir returns.
var errLocked = errors.New("locked")

// lockDataDir creates dir if needed and takes an exclusive lock on its
// LockFile, writing our pid into it. The lock is the first thing troupe dev
// takes, before it opens the broker's data or any step's store: a second
// troupe dev on the same dir is refused with the first one's pid and never
// touches the live data. The lock goes with the process (flock), so a
// killed dev leaves nothing to clean up; the file itself stays.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f); err != nil {
		pid := "unknown"
		if b, rerr := os.ReadFile(path); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
			pid = string(bytes.TrimSpace(b))
		}
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, usage("data dir %s is in use by another troupe dev (pid %s); stop it or pass another --data-dir", dir, pid)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
