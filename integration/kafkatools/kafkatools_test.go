package kafkatools_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/integration/kafkatools"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/runner"
)

const (
	topicCmd   = "org.apache.kafka.tools.TopicCommand"
	groupCmd   = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
	consumer   = "org.apache.kafka.tools.consumer.ConsoleConsumer"
	offsetsCmd = "org.apache.kafka.tools.GetOffsetShell"
)

// TestKafkaToolsAgainstDev runs Kafka's own command-line tools, of the
// Kafka version the integration broker runs, against `troupe dev`'s
// embedded broker, as the README says any Kafka client can use it:
// kafka-topics --create and --describe, kafka-consumer-groups --list,
// --describe (of dev's KIP-848 groups) and --reset-offsets, the console
// consumer with read_committed, and GetOffsetShell. Each of these failed on
// kfake as released (pkg/kafka/internal/kfake/PATCHES.md).
func TestKafkaToolsAgainstDev(t *testing.T) {
	if testing.Short() {
		t.Skip("runs troupe dev and a JVM")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	checkVersions(t)
	libs, err := kafkatools.Fetch(ctx, t.Output())
	skipIfMissing(t, err)

	brokers := startDev(t, ctx)

	// A topic with an aborted transaction before a committed one: a
	// read_committed console consumer reading one record must print the
	// committed one.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.TransactionalID("tools-test"), kgo.DefaultProduceTopic("tools-txn"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "tools-txn"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key    string
		commit kgo.TransactionEndTry
	}{{"aborted", kgo.TryAbort}, {"committed", kgo.TryCommit}} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(c.key), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, c.commit); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, "tools-txn")
	if err != nil || ends.Error() != nil {
		t.Fatal(err, ends.Error())
	}
	end, _ := ends.Lookup("tools-txn", 0)

	waitStable(t, ctx, adm, "orders.payment", "orders.inventory", "orders.shipping", "orders.saga.order-fulfillment")

	b := []string{"--bootstrap-server", brokers}
	cmds := []kafkatools.Command{
		{topicCmd, append(b, "--create", "--topic", "tools-created", "--partitions", "3", "--replication-factor", "1")},
		{topicCmd, append(b, "--describe", "--topic", "tools-created")},
		{topicCmd, append(b, "--describe", "--topic", "orders")},
		{groupCmd, append(b, "--list")},
		{groupCmd, append(b, "--list", "--state")},
		{groupCmd, append(b, "--describe", "--group", "orders.payment")},
		{consumer, append(b, "--topic", "tools-txn", "--from-beginning", "--max-messages", "1", "--timeout-ms", "60000",
			"--isolation-level", "read_committed", "--group", "tools-reader",
			"--formatter-property", "print.key=true", "--formatter-property", "print.value=false")},
		{groupCmd, append(b, "--reset-offsets", "--group", "tools-reader", "--topic", "tools-txn", "--to-earliest", "--execute")},
		{offsetsCmd, append(b, "--topic", "tools-txn")},
		{offsetsCmd, append(b, "--topic", "tools-created")},
	}
	start := time.Now()
	res, err := kafkatools.Run(ctx, libs, cmds, t.Output())
	skipIfMissing(t, err)
	t.Logf("%d tools in one JVM: %s", len(cmds), time.Since(start).Round(100*time.Millisecond))

	// What each must print; every one must exit 0 and print no error.
	want := []func(string) error{
		contains("Created topic tools-created."),
		all(contains("Topic: tools-created\tTopicId: ", "PartitionCount: 3\tReplicationFactor: 1"),
			lines(`(?m)^\tTopic: tools-created\tPartition: [012]\tLeader: 0\tReplicas: 0\tIsr: 0\tElr: \tLastKnownElr: $`, 3)),
		all(contains("PartitionCount: 8"), lines(`(?m)^\tTopic: orders\tPartition: \d\tLeader: 0`, 8)),
		// The groups of dev's steps and coordinator, one a line.
		all(lines(`(?m)^orders\.payment$`, 1), lines(`(?m)^orders\.inventory$`, 1), lines(`(?m)^orders\.shipping$`, 1),
			lines(`(?m)^orders\.saga\.order-fulfillment$`, 1)),
		// Stable, or reconciling after the topic created above.
		all(contains("GROUP"), lines(`(?m)^orders\.payment +(Stable|Reconciling|Assigning) *$`, 1)),
		// A KIP-848 group: one line per partition of each of its topics.
		all(lines(`(?m)^orders\.payment +orders +\d +\S+ +\d+ +\S+ +\S+ +127\.0\.0\.1`, 8), lines(`(?m)^orders\.payment +compensations +\d `, 8)),
		all(lines(`(?m)^committed$`, 1), lines(`(?m)^aborted$`, 0), contains("Processed a total of 1 messages")),
		all(contains("NEW-OFFSET"), lines(`(?m)^tools-reader +tools-txn +0 +0 *$`, 1)),
		lines(`(?m)^tools-txn:0:`+strconv.FormatInt(end.Offset, 10)+`$`, 1),
		lines(`(?m)^tools-created:[012]:0$`, 3),
	}
	errRE := regexp.MustCompile(`(?i)error|exception`)
	for i, r := range res {
		name := strings.TrimPrefix(r.Class, "org.apache.kafka.tools.") + " " + strings.Join(r.Args[2:], " ")
		var problems []string
		if r.Exit != 0 {
			problems = append(problems, fmt.Sprintf("exit %d", r.Exit))
		}
		if m := errRE.FindString(r.Output); m != "" {
			problems = append(problems, "printed "+strconv.Quote(m))
		}
		if err := want[i](r.Output); err != nil {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			t.Errorf("%s: %s\n%s", name, strings.Join(problems, "; "), r.Output)
		}
	}

	// What the tools did, read back with franz-go.
	offs, err := adm.FetchOffsets(ctx, "tools-reader")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("tools-txn", 0); !ok || o.At != 0 {
		t.Errorf("tools-reader's offset on tools-txn 0 after --reset-offsets --to-earliest: %+v, want 0", o)
	}
	td, err := adm.ListTopics(ctx, "tools-created")
	if err != nil || len(td["tools-created"].Partitions) != 3 {
		t.Errorf("tools-created after kafka-topics --create: %v, %v; want 3 partitions", td, err)
	}
}

// waitStable waits until dev's groups are Stable, so that what the tools
// print of them does not depend on when they run.
func waitStable(t *testing.T, ctx context.Context, adm *kadm.Client, groups ...string) {
	t.Helper()
	var last kadm.ListedGroups
	for {
		ls, err := adm.ListGroups(ctx)
		if err == nil {
			last = ls
			stable := 0
			for _, g := range groups {
				if ls[g].State == "Stable" {
					stable++
				}
			}
			if stable == len(groups) {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dev's groups %v not all Stable in time: %+v", groups, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkVersions: the tools are the broker's version.
func checkVersions(t *testing.T) {
	t.Helper()
	broker, err := kafkaharness.KafkaVersion()
	if err != nil {
		t.Fatal(err)
	}
	pom, err := os.ReadFile("pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`<kafka\.version>([^<]+)</kafka\.version>`).FindSubmatch(pom); m == nil || string(m[1]) != broker {
		t.Fatalf("integration/kafkatools/pom.xml pins Kafka %q, the broker (integration/kafkaharness/pom.xml) %s: make them equal", m, broker)
	}
}

func skipIfMissing(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, kafkaharness.ErrToolMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	t.Fatal(err)
}

// startDev runs troupe dev's stack (runner.Dev with the example app, as
// cmd/troupe's dev does) on free ports in a temporary directory, waits
// until it is ready, and returns its broker's address.
func startDev(t *testing.T, ctx context.Context) string {
	t.Helper()
	kafkaPort, regPort, httpAddr := freePort(t), freePort(t), "127.0.0.1:"+strconv.Itoa(freePort(t))
	dctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	app := runner.App{Name: "troupe", Version: "test", Types: orders.Register, Steps: orders.Steps}
	g := &runner.Globals{Log: zerolog.New(io.Discard)}
	o := runner.DevOptions{KafkaPort: kafkaPort, RegistryPort: regPort, HTTP: httpAddr, DemoRate: 2,
		DataDir: filepath.Join(t.TempDir(), ".troupe"), Out: io.Discard}
	go func() { done <- runner.Dev(dctx, app, g, o) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("troupe dev: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("troupe dev did not stop within 30 s")
		}
	})
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "127.0.0.1:" + strconv.Itoa(kafkaPort)
			}
		}
		select {
		case err := <-done:
			t.Fatalf("troupe dev returned before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("troupe dev not ready in time")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func contains(subs ...string) func(string) error {
	return func(out string) error {
		for _, s := range subs {
			if !strings.Contains(out, s) {
				return fmt.Errorf("no %q", s)
			}
		}
		return nil
	}
}

// lines wants re to match n times.
func lines(re string, n int) func(string) error {
	r := regexp.MustCompile(re)
	return func(out string) error {
		if got := len(r.FindAllString(out, -1)); got != n {
			return fmt.Errorf("%d lines match %s, want %d", got, re, n)
		}
		return nil
	}
}

func all(fs ...func(string) error) func(string) error {
	return func(out string) error {
		for _, f := range fs {
			if err := f(out); err != nil {
				return err
			}
		}
		return nil
	}
}
