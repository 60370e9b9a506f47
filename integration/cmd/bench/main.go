// Command bench runs the benchmarks of the README's Performance section against a real Apache Kafka
// broker, which it starts with the test harness (or against --brokers), and
// prints one table; with --readme it also writes the table, the machine and
// the date into the README between the <!-- bench:begin --> and
// <!-- bench:end --> markers, and every figure with its unit, the machine
// and the versions as JSON into integration/bench/results/latest.json (and
// step-eos's CPU profile beside it), so that runs can be compared. `make
// bench` runs it.
//
//	go run ./integration/cmd/bench
//	go run ./integration/cmd/bench -only pipe-alos,step-alos -events 100000
//	go run ./integration/cmd/bench -quick -only 'saga-eos,step-io*'
//
// Every processor reads the same pre-filled input (Avro Ticks, -instances
// keys over 8 partitions) with its own consumer group and writes its own
// output topic; its rate is measured by a read_committed reader of that
// output, from the first output record to the last, so that group start-up
// does not count. The processes the bench starts (countstep, the Kafka
// Streams JVM) are also metered: CPU-seconds (/proc/<pid>/stat utime+stime)
// from their first output to their last, per million events, and peak RSS
// (VmHWM).
//
//   - pipe-alos, pipe-eos: a bare franz-go consume→produce loop (offsets
//     committed, or a transaction, every 100 ms like a step): the ceiling.
//   - step-alos, step-eos: the counting step (integration/cmd/countstep, a
//     process of its own: decode, read state, update, write, emit,
//     changelog); the ratio to the pipe. The last round of step-eos is
//     CPU-profiled; its top functions are printed.
//   - step-io-alos, step-io-eos: the counting step with a 20 ms handler
//     over a backlog, at concurrency 1 and 64; the ratio to the ceiling
//     (concurrency / 20 ms).
//   - kstreams-alos, kstreams-eos, kstreams-eos-2t: the same count in Kafka
//     Streams 4.3.1 (integration/peers), 1 stream thread or 2, when Java
//     and Maven are here.
//   - saga-alos, saga-eos: the example saga (every step and the
//     coordinator, in this process): a warm-up at 200 orders/s from ready
//     (when latency settles, the worst saga), then steady phases at
//     -saga-rates (p50/p99/p99.9 from the order's produce to its SagaEnded,
//     and completed/offered), then the highest rate whose p99 stays under
//     1 s (two probes past the steady phases).
//   - restore: a changelog of -restore instances into Pebble.
//   - avro: encode/decode of OrderPlaced.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/cmd/countstep/events"
	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/event"
)

// row is one line of the result table. A rate row (rates set) is rendered
// at the end: its best round, and its ratio to the best pipe.
type row struct {
	name, figure, vs, note string
	eos                    bool
	rates                  []float64
	usages                 []usage // per round, for the processes the bench runs (see addUsage)
}

type bench struct {
	brokers    []string
	events     int
	instances  int
	partitions int32
	sagaRates  []float64
	sagaWarm   time.Duration
	sagaFor    time.Duration
	restore    int
	ioEvents   map[int]int // step-io backlog per concurrency (0: any other)
	quick      bool
	log        zerolog.Logger
	input      string         // the pre-filled Ticks
	ioTopics   map[int]string // the step-io backlogs, by size
	rounds     int
	rounds1    map[string]int // rounds done, by benchmark
	rows       []*row
	figs       []figure

	tmp         string // this run's scratch dir: the countstep binary, the profile
	countstep   countstep
	profile     string              // step-eos's CPU profile
	profileTops map[string][]string // its top functions, by flat and by cum
	machineNote string
	stepArgs    string
	loadStart   string   // /proc/loadavg when the run started
	commit      string   // the tree measured (see source)
	dirty       []string // its files that differed, when the run started
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	b := &bench{ioTopics: map[int]string{}, profileTops: map[string][]string{}, rounds1: map[string]int{}, loadStart: loadAvg()}
	var (
		brokers   = flag.String("brokers", "", "use these brokers (host:port,...) instead of starting Apache Kafka with the test harness")
		only      = flag.String("only", "", "comma-separated benchmarks to run (default all; a trailing * matches a prefix): pipe-alos, pipe-eos, step-alos, step-eos, step-io-alos, step-io-eos, kstreams-alos, kstreams-eos, kstreams-eos-2t, saga-alos, saga-eos, restore, avro")
		readme    = flag.String("readme", "", "write the results into this README between the bench markers")
		jsonOut   = flag.String("json", "", "write every figure as JSON to this file (default integration/bench/results/latest.json with -readme; - for none)")
		parts     = flag.Int("partitions", 8, "partitions of every topic")
		sagaRates = flag.String("saga-rates", "50,200,1000", "orders per second offered to the example saga, one steady phase each (ascending)")
		ioSmall   = flag.Int("io-events", 500, "backlog of the step-io benchmarks at concurrency 1")
		ioBig     = flag.Int("io-events-concurrent", 20_000, "backlog of the step-io benchmarks at concurrency 64")
	)
	flag.IntVar(&b.events, "events", 200_000, "input events for the pipe, step and peer benchmarks")
	flag.IntVar(&b.instances, "instances", 1000, "distinct keys (saga instances) of the input")
	flag.DurationVar(&b.sagaWarm, "saga-warmup", 10*time.Second, "how long the saga's first phase (at 200 orders/s, from ready) lasts; reported apart from the steady state")
	flag.DurationVar(&b.sagaFor, "saga-for", 10*time.Second, "how long each steady phase of the saga offers orders (its first 2 s not counted)")
	flag.IntVar(&b.restore, "restore", 1_000_000, "instances in the changelog of the restore benchmark")
	flag.IntVar(&b.rounds, "rounds", 2, "rounds of each throughput benchmark (pipe, step, kstreams); the best is reported")
	flag.BoolVar(&b.quick, "quick", false, "a short run for development: 20,000 events, 1 round, short saga phases, small backlogs (flags given explicitly still win)")
	flag.StringVar(&b.stepArgs, "step-args", "", "more countstep flags for the step benchmarks, for experiments (e.g. \"--commit-interval 1s\")")
	flag.StringVar(&b.machineNote, "machine-note", "", "a note on the machine kept in the JSON results (e.g. that it was shared)")
	flag.Parse()
	if b.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"events": func() { b.events = 20_000 }, "rounds": func() { b.rounds = 1 },
			"saga-warmup": func() { b.sagaWarm = 4 * time.Second }, "saga-for": func() { b.sagaFor = 5 * time.Second },
			"restore": func() { b.restore = 100_000 }, "io-events": func() { *ioSmall = 200 }, "io-events-concurrent": func() { *ioBig = 4000 },
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	for r := range strings.SplitSeq(*sagaRates, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
		if err != nil || x <= 0 {
			return fmt.Errorf("-saga-rates: %q is not a rate", r)
		}
		b.sagaRates = append(b.sagaRates, x)
	}
	slices.Sort(b.sagaRates)
	b.ioEvents = map[int]int{1: *ioSmall, 64: *ioBig, 0: *ioBig}
	b.partitions = int32(*parts)
	b.commit, b.dirty = source() // before the run: what go run built
	tmp, err := os.MkdirTemp("", "troupe-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b.tmp = tmp
	b.profile = filepath.Join(tmp, "step-eos.cpu.pprof")
	b.log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).Level(zerolog.WarnLevel).With().Timestamp().Logger()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	kafkaVersion, _ := kafkaharness.KafkaVersion()
	if *brokers != "" {
		b.brokers = strings.Split(*brokers, ",")
		kafkaVersion = "external"
	} else {
		c, err := kafkaharness.Start(ctx, kafkaharness.Options{Logger: os.Stderr})
		if err != nil {
			return fmt.Errorf("start Apache Kafka (or pass -brokers): %w", err)
		}
		defer c.Stop()
		b.brokers = c.Addrs()
	}

	want := func(name string) bool {
		if *only == "" {
			return true
		}
		for n := range strings.SplitSeq(*only, ",") {
			if n == name || (strings.HasSuffix(n, "*") && strings.HasPrefix(name, strings.TrimSuffix(n, "*"))) {
				return true
			}
		}
		return false
	}
	needInput := false
	for _, n := range []string{"pipe-alos", "pipe-eos", "step-alos", "step-eos", "kstreams-alos", "kstreams-eos", "kstreams-eos-2t"} {
		needInput = needInput || want(n)
	}
	if needInput {
		if err := b.fillInput(ctx); err != nil {
			return err
		}
	}
	type bm struct {
		name string
		fn   func(context.Context) error
	}
	// The saga first: the throughput runs leave the broker busy for a while
	// (the log cleaner compacting their changelogs), which its latency
	// would feel. The JVM peers last.
	bms := []bm{
		{"saga-alos", func(ctx context.Context) error { return b.sagaBench(ctx, false) }},
		{"saga-eos", func(ctx context.Context) error { return b.sagaBench(ctx, true) }},
		{"restore", b.restoreBench}, {"avro", b.avroBench},
	}
	rounds := max(b.rounds, 1)
	for i := range rounds {
		bms = append(bms,
			bm{"pipe-alos", func(ctx context.Context) error { return b.pipeBench(ctx, false) }},
			bm{"pipe-eos", func(ctx context.Context) error { return b.pipeBench(ctx, true) }},
			bm{"step-alos", func(ctx context.Context) error { return b.stepBench(ctx, false, false) }},
			// The last round of step-eos is profiled.
			bm{"step-eos", func(ctx context.Context) error { return b.stepBench(ctx, true, i == rounds-1) }})
	}
	for _, c := range []int{1, 64} {
		bms = append(bms,
			bm{"step-io-alos", func(ctx context.Context) error { return b.stepIOBench(ctx, false, c) }},
			bm{"step-io-eos", func(ctx context.Context) error { return b.stepIOBench(ctx, true, c) }})
	}
	for i := range rounds {
		bms = append(bms,
			bm{"kstreams-alos", func(ctx context.Context) error { return b.kstreamsBench(ctx, false, 1) }},
			bm{"kstreams-eos", func(ctx context.Context) error { return b.kstreamsBench(ctx, true, 1) }})
		if i == 0 {
			// One round with two stream threads, for its CPU and memory
			// beside one thread's: the run is long enough.
			bms = append(bms, bm{"kstreams-eos-2t", func(ctx context.Context) error { return b.kstreamsBench(ctx, true, 2) }})
		}
	}
	start := time.Now()
	for _, m := range bms {
		if !want(m.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s ... (%s into the run)\n", m.name, time.Since(start).Round(time.Second))
		if err := m.fn(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.rows = append(b.rows, &row{name: m.name, figure: "failed", note: err.Error()})
			fmt.Fprintf(os.Stderr, "bench: %s failed: %v\n", m.name, err)
			continue
		}
		r := b.rows[len(b.rows)-1]
		if r.rates != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %.0f events/s\n", m.name, r.rates[len(r.rates)-1])
		} else {
			fmt.Fprintf(os.Stderr, "bench: %s: %s %s\n", r.name, r.figure, r.vs)
		}
	}

	if want("step-eos") {
		if err := b.profileTop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		}
	}
	fmt.Fprintf(os.Stderr, "bench: done in %s\n", time.Since(start).Round(time.Second))

	table := b.table(kafkaVersion)
	fmt.Print(table)
	if *jsonOut == "" && *readme != "" {
		*jsonOut = "integration/bench/results/latest.json"
	}
	if *jsonOut != "" && *jsonOut != "-" {
		if err := b.writeResults(*jsonOut, kafkaVersion, table); err != nil {
			return err
		}
		for _, src := range []string{b.profile, b.heapProfile()} {
			dst := filepath.Join(filepath.Dir(*jsonOut), filepath.Base(src))
			if data, err := os.ReadFile(src); err == nil && os.WriteFile(dst, data, 0o644) == nil {
				fmt.Fprintf(os.Stderr, "bench: step-eos profile written to %s (go tool pprof -top %s)\n", dst, dst)
			}
		}
	}
	if *readme != "" {
		return writeReadme(*readme, table)
	}
	return nil
}

// fillInput creates the input topic and produces the Ticks.
func (b *bench) fillInput(ctx context.Context) error {
	b.input = fmt.Sprintf("bench-ticks-%d", time.Now().UnixNano())
	return b.fill(ctx, b.input, b.events)
}

// fill creates topic and produces n Ticks over b.instances keys.
func (b *bench) fill(ctx context.Context, topic string, n int) error {
	if err := b.createTopics(ctx, nil, topic); err != nil {
		return err
	}
	serde, err := events.NewSerde()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(50_000))
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	var firstErr error
	for i := range n {
		key := fmt.Sprintf("k-%04d", i%b.instances)
		v, err := serde.Encode(ctx, topic, events.Tick{Seq: int64(i)})
		if err != nil {
			return err
		}
		m := event.New(events.TickType, "bench", key)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: v, Headers: m.Headers()}, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if firstErr != nil {
		return fmt.Errorf("fill %s: %w", topic, firstErr)
	}
	fmt.Fprintf(os.Stderr, "bench: %d Ticks over %d keys into %s in %s (%.0f/s)\n", n, b.instances, topic, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
	return nil
}

// createTopics creates topics with the benchmark's partition count.
func (b *bench) createTopics(ctx context.Context, configs map[string]*string, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, b.partitions, -1, configs, topics...)
	if err != nil {
		return fmt.Errorf("create %v: %w", topics, err)
	}
	return resp.Error()
}

// outputReader reads topic (read_committed) until it has n records, and
// reports the processor's rate from their append times: output topics are
// created with message.timestamp.type=LogAppendTime (createOutput), so the
// rate is when the broker took the first and the last output, whatever the
// processor (Kafka Streams stamps outputs with the input's time) and however
// late the reader sees them.
type outputReader struct {
	done        chan struct{}
	rate        float64
	took        time.Duration
	first, last time.Time // append times of the first and the last output
	err         error
}

func (b *bench) readOutput(ctx context.Context, topic string, n int, timeout time.Duration) *outputReader {
	o := &outputReader{done: make(chan struct{})}
	go func() {
		defer close(o.done)
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			o.err = err
			return
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		seen := 0
		for seen < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				o.err = fmt.Errorf("%d of %d outputs on %s within %s", seen, n, topic, timeout)
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				if o.first.IsZero() || r.Timestamp.Before(o.first) {
					o.first = r.Timestamp
				}
				if r.Timestamp.After(o.last) {
					o.last = r.Timestamp
				}
				seen++
			})
		}
		o.took = o.last.Sub(o.first)
		o.rate = float64(n-1) / max(o.took.Seconds(), 1e-3)
	}()
	return o
}

// createOutput creates an output topic stamped with the broker's append
// time (see outputReader).
func (b *bench) createOutput(ctx context.Context, topic string) error {
	return b.createTopics(ctx, map[string]*string{"message.timestamp.type": kadm.StringPtr("LogAppendTime")}, topic)
}

func (o *outputReader) wait() error {
	<-o.done
	return o.err
}

// addRate records one round of a throughput benchmark; rounds of the same
// benchmark share a row (and move it last, so the row that printed is it).
func (b *bench) addRate(name string, eos bool, rate float64, note string) {
	b.rounds1[name]++
	b.record(name, "throughput", rate, "events/s", map[string]any{"events": b.events, "round": b.rounds1[name]})
	for i, r := range b.rows {
		if r.name == name && r.rates != nil {
			r.rates = append(r.rates, rate)
			b.rows = append(append(b.rows[:i:i], b.rows[i+1:]...), r)
			return
		}
	}
	b.rows = append(b.rows, &row{name: name, eos: eos, rates: []float64{rate}, note: note})
}

// render fills in the figure and ratio of the rate rows.
func (b *bench) render() {
	pipe := map[bool]float64{}
	for _, r := range b.rows {
		if strings.HasPrefix(r.name, "pipe-") && r.rates != nil {
			pipe[r.eos] = slices.Max(r.rates)
		}
	}
	for _, r := range b.rows {
		if r.rates == nil {
			continue
		}
		best := slices.Max(r.rates)
		r.figure = fmt.Sprintf("%.0f events/s", best)
		if len(r.rates) > 1 {
			var all []string
			for _, x := range r.rates {
				all = append(all, fmt.Sprintf("%.0f", x))
			}
			r.figure += fmt.Sprintf(" (best of %s)", strings.Join(all, ", "))
		}
		if base := pipe[r.eos]; base > 0 && !strings.HasPrefix(r.name, "pipe-") {
			r.vs = fmt.Sprintf("%.2f× pipe", best/base)
		}
	}
}

// table renders the results as markdown, with the machine and the date.
func (b *bench) table(kafkaVersion string) string {
	b.render()
	var w bytes.Buffer
	fmt.Fprintf(&w, "Measured by `make bench` on %s: %s, %d cores, %s RAM (load average %s at the start, %s at the end); %s; Apache Kafka %s (1 node, KRaft, on the same machine); franz-go %s; %d events over %d keys, %d partitions. Every figure is also in integration/bench/results/latest.json.%s\n\n",
		time.Now().UTC().Format("2006-01-02"), cpuModel(), runtime.NumCPU(), memTotal(), b.loadStart, loadAvg(), runtime.Version(), kafkaVersion, moduleVersion("github.com/twmb/franz-go"), b.events, b.instances, b.partitions, sharedNote(b.loadStart))
	fmt.Fprintln(&w, "| benchmark | figure | vs baseline | notes |")
	fmt.Fprintln(&w, "|---|---|---|---|")
	for _, r := range append(slices.Clone(b.rows), b.usageRows()...) {
		fmt.Fprintf(&w, "| %s | %s | %s | %s |\n", r.name, r.figure, r.vs, strings.ReplaceAll(r.note, "|", "\\|"))
	}
	return w.String()
}

// sharedNote warns, when the load at the start exceeded the cores, that
// other work shared the machine.
func sharedNote(load string) string {
	f := strings.Fields(load)
	if len(f) == 0 {
		return ""
	}
	if l, err := strconv.ParseFloat(f[0], 64); err != nil || l <= float64(runtime.NumCPU()) {
		return ""
	}
	return " Other work shared the machine during the run (see the load): compare figures as ratios within this run, not with other runs."
}

const (
	markBegin = "<!-- bench:begin -->"
	markEnd   = "<!-- bench:end -->"
)

// writeReadme replaces what is between the markers in path with table.
func writeReadme(path, table string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(src, []byte(markBegin)), bytes.Index(src, []byte(markEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section to write the results into", path, markBegin, markEnd)
	}
	var out bytes.Buffer
	out.Write(src[:i+len(markBegin)])
	out.WriteString("\n" + table)
	out.Write(src[j:])
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: results written to %s\n", path)
	return nil
}

func cpuModel() string {
	return procField("/proc/cpuinfo", "model name", "unknown CPU")
}

func memTotal() string {
	v := procField("/proc/meminfo", "MemTotal", "")
	var kb int64
	if _, err := fmt.Sscanf(v, "%d kB", &kb); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
}

func procField(path, key, def string) string {
	f, err := os.Open(path)
	if err != nil {
		return def
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return def
}
