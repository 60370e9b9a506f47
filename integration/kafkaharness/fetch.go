package kafkaharness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// ErrToolMissing is returned (wrapped) by [Fetch] and [Start] when java or
// mvn is not on PATH. [Main] and [StartCluster] skip the tests on it unless
// CI=true.
var ErrToolMissing = errors.New("kafkaharness: a required tool is missing")

// installHint says what to install when java or mvn is missing.
const installHint = "install a Java 17+ runtime and Maven, e.g. `apt-get install openjdk-17-jre-headless maven`"

// CacheDir is where fetched Kafka jars live: $TROUPE_KAFKA_CACHE, else
// $XDG_CACHE_HOME/troupe, else ~/.cache/troupe. Each Kafka version has its
// own kafka-<version> directory there.
func CacheDir() string {
	if d := os.Getenv("TROUPE_KAFKA_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "troupe")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "troupe")
	}
	return filepath.Join(os.TempDir(), "troupe-cache")
}

// RepoFile finds a file of the troupe repository by its path from the
// repository's root (e.g. "integration/kafkaharness/pom.xml"), so that the
// harness and the benchmark peers work from any test package's working
// directory: from this source file's place, else (under -trimpath, where
// that is not a real path) from the working directory up.
func RepoFile(rel string) (string, error) {
	rel = filepath.FromSlash(rel)
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("kafkaharness: cannot find %s (run from inside the troupe repo)", rel)
}

// pomPath is the pom.xml that pins the broker's jars.
const pomPath = "integration/kafkaharness/pom.xml"

var kafkaVersionRE = regexp.MustCompile(`<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>`)

// pom reads the pom.xml at rel (from the repository's root) and returns its
// bytes and the Kafka version it pins.
func pom(rel string) (path string, data []byte, version string, err error) {
	path, err = RepoFile(rel)
	if err != nil {
		return "", nil, "", err
	}
	data, err = os.ReadFile(path)
	if err != nil {
		return "", nil, "", fmt.Errorf("kafkaharness: read %s: %w", path, err)
	}
	m := kafkaVersionRE.FindSubmatch(data)
	if m == nil {
		return "", nil, "", fmt.Errorf("kafkaharness: %s has no <kafka.version> property", path)
	}
	return path, data, string(m[1]), nil
}

// KafkaVersion is the Apache Kafka version pinned in pom.xml.
func KafkaVersion() (string, error) {
	_, _, v, err := pom(pomPath)
	return v, err
}

// Fetch makes sure the Kafka broker jars are in the cache and returns the
// directory holding them (for `java -cp "DIR/*"`). The first call on a
// machine runs mvn (about 6 s and 44 MB); later calls only check a marker.
// The marker records pom.xml's hash, so editing the pom refetches. A file
// lock keeps concurrent test processes from fetching at the same time;
// progress goes to w (may be nil).
func Fetch(ctx context.Context, w io.Writer) (string, error) {
	return FetchJars(ctx, w, pomPath, "kafka", "kafka_2.13-")
}

// FetchJars is [Fetch] for any pom.xml of the repository that pins a
// <kafka.version>: pomRel is its path from the repository's root, the jars
// land in CacheDir()/<name>-<version>/libs, and a jar whose name starts
// with mustHave must be among them.
func FetchJars(ctx context.Context, w io.Writer, pomRel, name, mustHave string) (string, error) {
	if w == nil {
		w = io.Discard
	}
	_, pomData, version, err := pom(pomRel)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pomData)
	want := hex.EncodeToString(sum[:])

	base := filepath.Join(CacheDir(), name+"-"+version)
	libs := filepath.Join(base, "libs")
	marker := filepath.Join(base, "complete")
	if got, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(got)) == want {
		return libs, nil // fast path: no lock needed to read a finished fetch
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("kafkaharness: create jar cache (set TROUPE_KAFKA_CACHE to a writable dir): %w", err)
	}

	unlock, err := LockFile(ctx, filepath.Join(base, "lock"), w)
	if err != nil {
		return "", err
	}
	defer unlock()

	// Another process may have finished while we waited for the lock.
	if got, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(got)) == want {
		return libs, nil
	}
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", fmt.Errorf("%w: mvn is not on PATH, needed once to fetch the jars of %s (Kafka %s) (%s)", ErrToolMissing, pomRel, version, installHint)
	}

	// Fetch into a scratch dir with a copy of the pom, so neither a half
	// fetch nor mvn's own files (target/) land where anyone reads them.
	tmp, err := os.MkdirTemp(base, "fetch-")
	if err != nil {
		return "", fmt.Errorf("kafkaharness: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "pom.xml"), pomData, 0o644); err != nil {
		return "", fmt.Errorf("kafkaharness: %w", err)
	}
	out := filepath.Join(tmp, "libs")
	fmt.Fprintf(w, "kafkaharness: fetching the jars of %s (Kafka %s) with mvn into %s (once per machine)\n", pomRel, version, libs)
	start := time.Now()
	cmd := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", filepath.Join(tmp, "pom.xml"),
		"dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory="+out)
	cmd.Dir = tmp
	var outBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kafkaharness: mvn dependency:copy-dependencies failed (network or ~/.m2 problem?): %w\n%s", err, tail(outBuf.String(), 40))
	}
	if jars, _ := filepath.Glob(filepath.Join(out, mustHave+version+".jar")); len(jars) == 0 {
		return "", fmt.Errorf("kafkaharness: mvn succeeded but %s%s.jar is missing:\n%s", mustHave, version, tail(outBuf.String(), 40))
	}
	if err := os.RemoveAll(libs); err != nil {
		return "", fmt.Errorf("kafkaharness: %w", err)
	}
	if err := os.Rename(out, libs); err != nil {
		return "", fmt.Errorf("kafkaharness: %w", err)
	}
	// The marker is written last and atomically: its presence means libs is
	// complete.
	if err := os.WriteFile(marker+".tmp", []byte(want+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("kafkaharness: %w", err)
	}
	if err := os.Rename(marker+".tmp", marker); err != nil {
		return "", fmt.Errorf("kafkaharness: %w", err)
	}
	n, _ := filepath.Glob(filepath.Join(libs, "*.jar"))
	fmt.Fprintf(w, "kafkaharness: fetched %d jars in %s\n", len(n), time.Since(start).Round(100*time.Millisecond))
	return libs, nil
}

// LockFile takes an exclusive flock on path, polling so that ctx can cancel
// the wait (progress goes to w). The lock dies with the process, so a
// crashed fetch or build never wedges later runs.
func LockFile(ctx context.Context, path string, w io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kafkaharness: open lock: %w", err)
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("kafkaharness: lock %s: %w", path, err)
		}
		if !waiting {
			fmt.Fprintf(w, "kafkaharness: waiting for another process to release %s (a fetch or build in progress)\n", path)
			waiting = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kafkaharness: waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cdsArchivePath names the JVM class data sharing archive for the jars in
// libs run by java. Mapping the archive halves a broker's start (2.4 s to
// 1.2 s on 2 cores). The name hashes the java binary's identity, so a JDK
// upgrade makes a new archive instead of silently ignoring the old one.
// It returns "" if java cannot be identified.
func cdsArchivePath(java, libs string) string {
	real, err := filepath.EvalSymlinks(java)
	if err != nil {
		return ""
	}
	st, err := os.Stat(real)
	if err != nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s", real, st.Size(), st.ModTime().UnixNano(), libs)
	if m, err := os.ReadFile(filepath.Join(filepath.Dir(libs), "complete")); err == nil {
		h.Write(m) // the jars' identity
	}
	return filepath.Join(filepath.Dir(libs), "cds-"+hex.EncodeToString(h.Sum(nil))[:16]+".jsa")
}

func fileExists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}
