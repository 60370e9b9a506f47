package avro_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/avro"
)

type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// A registry still loading its topic (503) is waited for until it answers.
func TestAwaitRegistryStarting(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error_code":50003,"message":"loading"}`))
			return
		}
		_, _ = w.Write([]byte(`["AVRO"]`))
	}))
	defer srv.Close()
	rc, err := avro.NewRegistryClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Await(context.Background(), 30*time.Second, zerolog.Nop()); err != nil {
		t.Fatalf("Await: %v", err)
	}
	if n := calls.Load(); n < 4 {
		t.Fatalf("Await returned after %d requests, before the registry answered 200", n)
	}
}

// A registry that never comes up fails after the wait, naming the URL and
// the flag; one that answers with a client error is up.
func TestAwaitRegistryNeverUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there
	rc, err := avro.NewRegistryClient(url)
	if err != nil {
		t.Fatal(err)
	}
	log := &lockedLog{}
	start := time.Now()
	err = rc.Await(context.Background(), 300*time.Millisecond, zerolog.New(log))
	if !errors.Is(err, avro.ErrRegistryUnavailable) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "--registry") {
		t.Fatalf("Await of a registry that is not there: %v", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("gave up after %s, before the 300ms wait", took)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	rc, _ = avro.NewRegistryClient(srv.URL)
	if err := rc.Await(context.Background(), time.Second, zerolog.Nop()); err != nil {
		t.Errorf("a registry answering 404 to /schemas/types: %v, want up", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rc, _ = avro.NewRegistryClient(url)
	if err := rc.Await(ctx, time.Minute, zerolog.Nop()); !errors.Is(err, context.Canceled) {
		t.Errorf("Await with its context cancelled: %v", err)
	}
}
