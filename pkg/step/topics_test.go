package step

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
)

// shortTopicWait makes a runtime started by the test wait d, not
// kafka.DefaultTopicWait, for a missing topic.
func shortTopicWait(t *testing.T, d time.Duration) {
	old := topicWait
	topicWait = d
	t.Cleanup(func() { topicWait = old })
}

// logBuffer is a zerolog writer that tests can wait on.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func threeBrokers(t *testing.T) *kgo.Client {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// An input created after the step started is waited for, with a log line
// naming it; the step then creates its own topics with the input's count.
func TestPrepareTopicsWaitsForLateInput(t *testing.T) {
	cl := threeBrokers(t)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(t.Context(), 4, 1, nil, "early"); err != nil {
		t.Fatal(err)
	}
	s := New[counter]("app", "count", Inputs("early", "late"))
	logs := &logBuffer{}
	type result struct {
		n   int32
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, _, err := prepareTopics(t.Context(), cl, s.definition(), kafka.TopicWait{
			Max: 30 * time.Second, Every: time.Millisecond, Log: zerolog.New(logs),
		})
		done <- result{n, err}
	}()
	waitFor(t, 10*time.Second, "a log line naming the missing topic", func() (bool, string) {
		return strings.Contains(logs.String(), `"missing":["late"]`), logs.String()
	})
	select {
	case r := <-done:
		t.Fatalf("prepareTopics returned before the input existed: %d, %v", r.n, r.err)
	default:
	}
	if _, err := adm.CreateTopic(t.Context(), 4, 1, nil, "late"); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("prepareTopics still waiting 10 s after the input was created")
	}
	if r.err != nil || r.n != 4 {
		t.Fatalf("prepareTopics = %d, %v; want 4 partitions", r.n, r.err)
	}
	if strings.Contains(logs.String(), `"missing":["early"`) {
		t.Errorf("logged an existing topic as missing:\n%s", logs)
	}
	tds, err := adm.ListTopics(t.Context(), "app.count.changelog", "app.count.retry", "app.count.dlq")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.count.changelog", "app.count.retry", "app.count.dlq"} {
		if td := tds[name]; td.Err != nil || len(td.Partitions) != 4 {
			t.Errorf("%s: %d partitions, %v; want 4 created", name, len(td.Partitions), td.Err)
		}
	}
}

// An input never created fails after the wait, with the error the operator
// needs, and not before the wait is over.
func TestPrepareTopicsMissingInputAfterWait(t *testing.T) {
	cl := threeBrokers(t)
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 2, 1, nil, "there"); err != nil {
		t.Fatal(err)
	}
	s := New[counter]("app", "count", Inputs("there", "never", "nope"))
	const wait = 300 * time.Millisecond
	start := time.Now()
	_, _, err := prepareTopics(t.Context(), cl, s.definition(), kafka.TopicWait{Max: wait, Log: zerolog.Nop()})
	took := time.Since(start)
	if err == nil {
		t.Fatal("no error for inputs that do not exist")
	}
	for _, want := range []string{
		"input topic never does not exist (create it: troupe topics apply)",
		"input topic nope does not exist (create it: troupe topics apply)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "there") {
		t.Errorf("error %q names an input that exists", err)
	}
	if took < wait {
		t.Errorf("failed after %s, before the %s wait was over", took, wait)
	}
}

// Cancelling the context ends the wait at once.
func TestPrepareTopicsWaitHonoursContext(t *testing.T) {
	cl := threeBrokers(t)
	s := New[counter]("app", "count", Inputs("never"))
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := prepareTopics(ctx, cl, s.definition(), kafka.TopicWait{Max: time.Minute, Every: time.Millisecond, Log: zerolog.New(logs)})
		done <- err
	}()
	waitFor(t, 10*time.Second, "the wait to begin", func() (bool, string) {
		return strings.Contains(logs.String(), "never"), logs.String()
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("prepareTopics still waiting 5 s after its context was cancelled")
	}
}
