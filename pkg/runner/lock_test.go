package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, LockFile))
	if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want our pid", b, err)
	}
	_, err = lockDataDir(dir)
	want := fmt.Sprintf("data dir %s is in use by another troupe dev (pid %d); stop it or pass another --data-dir", dir, os.Getpid())
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v\nwant %q", err, want)
	}
	unlock()
	unlock, err = lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock()
}
