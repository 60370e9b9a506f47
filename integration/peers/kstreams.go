// Package peers builds and runs the benchmark peers of the README's Performance section: other
// stacks doing the same work as troupe's steps on the same topics and
// records, so that the benchmark can print each troupe figure beside a
// peer's measured in the same run on the same machine.
//
// The Kafka Streams peer (kstreams/, Java, Kafka Streams 4.3.1 from Maven
// Central) does the work of the count step: for each input record it reads
// the key's count from a persistent RocksDB store with a changelog, adds
// one, writes it back and emits the new count under the same key, with
// exactly_once_v2 or at_least_once and a 100 ms commit interval. One
// difference in work: the peer treats values as opaque bytes and emits an
// 8-byte big-endian long, whereas troupe's step decodes the Avro input
// (Confluent wire format) and encodes an Avro output. The peer therefore
// does a little less work per record than troupe.
//
// [BuildKafkaStreams] compiles the peer once per machine into
// kafkaharness.CacheDir()/kstreams-peer-<hash> (mvn for the jars, javac for
// the one source file) and returns its classpath; [StartKafkaStreams] runs
// it and waits until it is processing.
package peers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/troupehq/troupe/integration/kafkaharness"
)

// Guarantees the Kafka Streams peer accepts (Kafka Streams'
// processing.guarantee values).
const (
	ExactlyOnceV2 = "exactly_once_v2"
	AtLeastOnce   = "at_least_once"
)

// installHint says what to install when a tool is missing. Debian's JRE
// carries the jdk.compiler module, so javac itself is optional (see
// javacCommand).
const installHint = "install a Java 17+ JDK and Maven, e.g. `apt-get install openjdk-17-jdk-headless maven`"

const (
	startTimeout = 60 * time.Second // for the RUNNING line
	stopTimeout  = 20 * time.Second // after SIGTERM, before SIGKILL
)

// kstreamsDir is the peer's Maven project, kstreams/ beside this file.
func kstreamsDir() (string, error) {
	pom, err := kafkaharness.RepoFile("integration/peers/kstreams/pom.xml")
	if err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	return filepath.Dir(pom), nil
}

// projectFile is one input of the build: a path relative to kstreams/ and
// its bytes.
type projectFile struct {
	rel  string
	data []byte
}

// readProject reads pom.xml and every file under src/, sorted by path, and
// returns them with a hash of them all.
func readProject(dir string) (files []projectFile, hash string, err error) {
	pom, err := os.ReadFile(filepath.Join(dir, "pom.xml"))
	if err != nil {
		return nil, "", fmt.Errorf("peers: %w", err)
	}
	files = append(files, projectFile{"pom.xml", pom})
	err = filepath.WalkDir(filepath.Join(dir, "src"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files = append(files, projectFile{filepath.ToSlash(rel), data})
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("peers: read the Kafka Streams peer's sources: %w", err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.rel, len(f.data))
		h.Write(f.data)
	}
	return files, hex.EncodeToString(h.Sum(nil)), nil
}

// classpathOf is the java -cp value for a build in base; java expands the
// libs/* wildcard itself.
func classpathOf(base string) string {
	return filepath.Join(base, "classes") + string(os.PathListSeparator) + filepath.Join(base, "libs", "*")
}

// BuildKafkaStreams makes sure the Kafka Streams peer is compiled and
// returns a classpath for `java -cp`. The first call on a machine runs mvn
// to fetch Kafka Streams and its dependencies (about 95 MB, most of it
// RocksDB) and compiles the peer into
// kafkaharness.CacheDir()/kstreams-peer-<hash>; later calls only check a
// marker there. The hash covers pom.xml and the Java source, so editing
// either rebuilds. A file lock keeps concurrent processes from building at
// once; progress goes to w (may be nil). If mvn, or both javac and java,
// are missing the error wraps [kafkaharness.ErrToolMissing].
func BuildKafkaStreams(ctx context.Context, w io.Writer) (classpath string, err error) {
	if w == nil {
		w = io.Discard
	}
	dir, err := kstreamsDir()
	if err != nil {
		return "", err
	}
	files, sum, err := readProject(dir)
	if err != nil {
		return "", err
	}
	base := filepath.Join(kafkaharness.CacheDir(), "kstreams-peer-"+sum[:16])
	marker := filepath.Join(base, "complete")
	if got, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(got)) == sum {
		return classpathOf(base), nil // fast path: no lock needed to read a finished build
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("peers: create the build cache (set TROUPE_KAFKA_CACHE to a writable dir): %w", err)
	}
	unlock, err := kafkaharness.LockFile(ctx, filepath.Join(base, "lock"), w)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have finished while we waited for the lock.
	if got, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(got)) == sum {
		return classpathOf(base), nil
	}

	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", fmt.Errorf("%w: mvn is not on PATH, needed once to fetch Kafka Streams for the benchmark peer (%s)", kafkaharness.ErrToolMissing, installHint)
	}
	javac, err := javacCommand()
	if err != nil {
		return "", err
	}

	// Build in a scratch dir from the bytes we hashed, so neither a half
	// build nor mvn's target/ lands where anyone reads it.
	tmp, err := os.MkdirTemp(base, "build-")
	if err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	defer os.RemoveAll(tmp)
	var sources []string
	for _, f := range files {
		p := filepath.Join(tmp, filepath.FromSlash(f.rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("peers: %w", err)
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return "", fmt.Errorf("peers: %w", err)
		}
		if strings.HasSuffix(f.rel, ".java") {
			sources = append(sources, p)
		}
	}
	libs, classes := filepath.Join(tmp, "libs"), filepath.Join(tmp, "classes")
	fmt.Fprintf(w, "peers: building the Kafka Streams peer into %s (once per machine and source change)\n", base)
	start := time.Now()

	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", filepath.Join(tmp, "pom.xml"),
		"dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory="+libs)
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("peers: mvn dependency:copy-dependencies for the Kafka Streams peer failed (network or ~/.m2 problem?): %w\n%s", err, tail(out.String(), 40))
	}
	if jars, _ := filepath.Glob(filepath.Join(libs, "kafka-streams-*.jar")); len(jars) == 0 {
		return "", fmt.Errorf("peers: mvn succeeded but no kafka-streams jar is in %s:\n%s", libs, tail(out.String(), 40))
	}
	// The jars listed one by one: javac run as `java -m jdk.compiler/...`
	// does not expand a libs/* wildcard.
	jars, err := filepath.Glob(filepath.Join(libs, "*.jar"))
	if err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}

	out.Reset()
	args := append(javac[1:], "--release", "17", "-encoding", "UTF-8", "-nowarn",
		"-d", classes, "-cp", strings.Join(jars, string(os.PathListSeparator)))
	cmd = exec.CommandContext(ctx, javac[0], append(args, sources...)...)
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("peers: compiling the Kafka Streams peer failed: %w\n%s", err, tail(out.String(), 40))
	}

	for _, d := range []string{"libs", "classes"} {
		if err := os.RemoveAll(filepath.Join(base, d)); err != nil {
			return "", fmt.Errorf("peers: %w", err)
		}
		if err := os.Rename(filepath.Join(tmp, d), filepath.Join(base, d)); err != nil {
			return "", fmt.Errorf("peers: %w", err)
		}
	}
	// The marker is written last and atomically: its presence means the
	// build is complete.
	if err := os.WriteFile(marker+".tmp", []byte(sum+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	if err := os.Rename(marker+".tmp", marker); err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	fmt.Fprintf(w, "peers: built the Kafka Streams peer in %s\n", time.Since(start).Round(100*time.Millisecond))
	return classpathOf(base), nil
}

// javacCommand returns the command that runs javac: javac itself, or else
// the compiler module of a java without javac (Debian's JRE packages carry
// jdk.compiler but not the javac launcher).
func javacCommand() ([]string, error) {
	if p, err := exec.LookPath("javac"); err == nil {
		return []string{p}, nil
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("%w: neither javac nor java is on PATH, needed to compile the Kafka Streams peer (%s)", kafkaharness.ErrToolMissing, installHint)
	}
	if err := exec.Command(java, "--describe-module", "jdk.compiler").Run(); err != nil {
		return nil, fmt.Errorf("%w: javac is not on PATH and %s has no jdk.compiler module, needed to compile the Kafka Streams peer (%s)", kafkaharness.ErrToolMissing, java, installHint)
	}
	return []string{java, "-m", "jdk.compiler/com.sun.tools.javac.Main"}, nil
}

// KafkaStreamsOptions configure one run of the Kafka Streams peer.
type KafkaStreamsOptions struct {
	Brokers []string // bootstrap servers; required
	Input   string   // input topic; required
	Output  string   // output topic; required
	// AppID is Kafka Streams' application.id: the consumer group, the
	// transactional id prefix and the prefix of the changelog topic
	// (AppID-counts-changelog). Required; use a fresh one per run to start
	// from the beginning of Input with an empty store.
	AppID string
	// Guarantee is ExactlyOnceV2 or AtLeastOnce; required.
	Guarantee string
	// StateDir holds the RocksDB store. Empty means a temporary directory,
	// removed by Stop.
	StateDir string
	// Threads is num.stream.threads; 0 means 1.
	Threads int
}

// Peer is a running peer process.
type Peer struct {
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // set before exited closes
	out      *outputSink
	rmState  string // temporary state dir to remove on Stop
	stopOnce sync.Once
	stopErr  error
}

// StartKafkaStreams starts the Kafka Streams peer from classpath (from
// [BuildKafkaStreams]) as
//
//	java -Xmx512m -cp CLASSPATH troupe.bench.CountStreams --brokers ... --input ... \
//	    --output ... --app-id ... --guarantee ... --state-dir ... --threads N
//
// and waits up to 60 s for it to print RUNNING, i.e. for Kafka Streams to
// have joined its group and been assigned the input's partitions (about
// 3 s). It may already have processed records by then (its first outputs
// were appended 0.6-0.9 s before RUNNING in our runs), so time a
// benchmark from the outputs, not from the return of this function. ctx
// bounds only the start; the process runs until [Peer.Stop] (or until this
// process dies, on Linux). The JVM's stdout and stderr (WARN and above)
// go to log, which may be nil.
func StartKafkaStreams(ctx context.Context, classpath string, o KafkaStreamsOptions, log io.Writer) (*Peer, error) {
	if log == nil {
		log = io.Discard
	}
	switch {
	case len(o.Brokers) == 0:
		return nil, errors.New("peers: KafkaStreamsOptions.Brokers is empty")
	case o.Input == "" || o.Output == "":
		return nil, errors.New("peers: KafkaStreamsOptions.Input and Output are required")
	case o.AppID == "":
		return nil, errors.New("peers: KafkaStreamsOptions.AppID is required")
	case o.Guarantee != ExactlyOnceV2 && o.Guarantee != AtLeastOnce:
		return nil, fmt.Errorf("peers: KafkaStreamsOptions.Guarantee is %q, want %q or %q", o.Guarantee, ExactlyOnceV2, AtLeastOnce)
	case o.Threads < 0:
		return nil, fmt.Errorf("peers: KafkaStreamsOptions.Threads is %d", o.Threads)
	}
	threads := max(o.Threads, 1)
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("%w: java is not on PATH, needed to run the Kafka Streams peer (%s)", kafkaharness.ErrToolMissing, installHint)
	}
	p := &Peer{exited: make(chan struct{})}
	stateDir := o.StateDir
	if stateDir == "" {
		if stateDir, err = os.MkdirTemp("", "troupe-kstreams-"); err != nil {
			return nil, fmt.Errorf("peers: %w", err)
		}
		p.rmState = stateDir
	} else if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("peers: state dir: %w", err)
	}

	running := make(chan struct{})
	p.out = &outputSink{w: log, running: running}
	cmd := exec.Command(java, "-Xmx512m", "-XX:+ExitOnOutOfMemoryError",
		"-cp", classpath, "troupe.bench.CountStreams",
		"--brokers", strings.Join(o.Brokers, ","),
		"--input", o.Input, "--output", o.Output,
		"--app-id", o.AppID, "--guarantee", o.Guarantee,
		"--state-dir", stateDir, "--threads", strconv.Itoa(threads))
	cmd.Dir = stateDir // where a crashing JVM drops hs_err_pid*.log
	cmd.Stdout = p.out.writer(true)
	cmd.Stderr = p.out.writer(false)
	if err := kafkaharness.StartChild(cmd); err != nil {
		p.removeState()
		return nil, fmt.Errorf("peers: start the Kafka Streams peer: %w", err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	var why string
	select {
	case <-running:
		return p, nil
	case <-p.exited:
		why = fmt.Sprintf("exited before RUNNING (%v)", p.waitErr)
	case <-timer.C:
		why = fmt.Sprintf("not RUNNING after %s", startTimeout)
	case <-ctx.Done():
		why = ctx.Err().Error()
	}
	_ = p.Stop()
	return nil, fmt.Errorf("peers: Kafka Streams peer (app id %s) %s; its output ends:\n%s", o.AppID, why, p.out.tail(30))
}

// Done is closed when the peer's process has exited, for whatever reason.
func (p *Peer) Done() <-chan struct{} { return p.exited }

// Stop sends the peer SIGTERM, which closes Kafka Streams cleanly (a last
// commit), waits up to 20 s for it to exit and then kills it. It returns an
// error if the peer had already exited on its own, ignored SIGTERM, or
// exited with a failure; the error carries the tail of its output. Only the
// first call does anything; later calls return the same result.
func (p *Peer) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Peer) stop() error {
	defer p.removeState()
	pid := p.cmd.Process.Pid
	select {
	case <-p.exited:
		return fmt.Errorf("peers: Kafka Streams peer had exited before Stop (%v); its output ends:\n%s", p.waitErr, p.out.tail(30))
	default:
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("peers: Kafka Streams peer ignored SIGTERM for %s and was killed; its output ends:\n%s", stopTimeout, p.out.tail(30))
	}
	// A JVM that ran its shutdown hooks on SIGTERM exits with 128+15.
	if code := p.cmd.ProcessState.ExitCode(); code != 0 && code != 128+int(syscall.SIGTERM) {
		return fmt.Errorf("peers: Kafka Streams peer exited with %v on SIGTERM; its output ends:\n%s", p.waitErr, p.out.tail(30))
	}
	return nil
}

func (p *Peer) removeState() {
	if p.rmState != "" {
		os.RemoveAll(p.rmState)
	}
}

// outputSink copies the JVM's output to the caller's log line by line,
// keeps the last lines for error messages, and closes running when stdout
// says RUNNING.
type outputSink struct {
	mu      sync.Mutex
	w       io.Writer
	lines   []string // last maxTail lines
	running chan struct{}
	seen    bool
}

const maxTail = 60

// writer returns the writer for one of the JVM's streams. exec calls its
// Write from one goroutine and Wait returns only after the last Write, so
// the tail is complete once the process has exited.
func (s *outputSink) writer(stdout bool) io.Writer {
	return &lineWriter{sink: s, stdout: stdout}
}

type lineWriter struct {
	sink   *outputSink
	stdout bool
	buf    []byte // an unfinished line
}

func (lw *lineWriter) Write(b []byte) (int, error) {
	lw.buf = append(lw.buf, b...)
	for {
		i := bytes.IndexByte(lw.buf, '\n')
		if i < 0 {
			break
		}
		lw.sink.line(string(lw.buf[:i]), lw.stdout)
		lw.buf = lw.buf[i+1:]
	}
	if len(lw.buf) > 64*1024 { // a runaway line: pass it on in pieces
		lw.sink.line(string(lw.buf), lw.stdout)
		lw.buf = nil
	}
	if len(lw.buf) == 0 {
		lw.buf = nil
	}
	return len(b), nil
}

func (s *outputSink) line(l string, stdout bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintln(s.w, l)
	s.lines = append(s.lines, l)
	if len(s.lines) > maxTail {
		s.lines = s.lines[len(s.lines)-maxTail:]
	}
	if stdout && !s.seen && strings.TrimSpace(l) == "RUNNING" {
		s.seen = true
		close(s.running)
	}
}

func (s *outputSink) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := s.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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
