package runner

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/kafka"
)

// A step's loop starts only once the registry answers: started together
// with it, the step would dead-letter its first records.
func TestAfterRegistryWaits(t *testing.T) {
	var up atomic.Bool
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) >= 3 {
			up.Store(true)
		}
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error_code":50003,"message":"loading"}`))
			return
		}
		_, _ = w.Write([]byte(`["AVRO"]`))
	}))
	defer srv.Close()
	env, err := NewEnv(App{}, kafka.Config{Brokers: []string{"127.0.0.1:1"}}, srv.URL, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	err = env.AfterRegistry(func(context.Context) error {
		if !up.Load() {
			t.Error("the loop started before the registry answered")
		}
		ran = true
		return nil
	})(context.Background())
	if err != nil || !ran {
		t.Fatalf("AfterRegistry: %v, loop ran: %v", err, ran)
	}
}
