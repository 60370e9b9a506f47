package runner

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
)

// DeadLetters is the answer of GET /api/deadletters: the outstanding dead
// letters (neither replayed nor discarded) of every step of a topology and
// of its coordinator, step saga.<saga>, whose dead letters belong to no
// step's history. The UI's dead-letter card shows it.
type DeadLetters struct {
	Steps []StepDeadLetters `json:"steps"`
	// At is when the DLQs were read; answers are cached for a few seconds.
	At time.Time `json:"at"`
}

// StepDeadLetters are one step's dead letters.
type StepDeadLetters struct {
	Step        string `json:"step"`
	Topic       string `json:"topic"`
	Outstanding int    `json:"outstanding"`
	Settled     int    `json:"settled"`
	// Letters are the first outstanding ones, at most maxListed.
	Letters []OutstandingDeadLetter `json:"letters,omitempty"`
	// Command is the troupe dlq command that lists them.
	Command string `json:"command"`
	// Error says why the DLQ could not be read (it is then counted as 0).
	Error string `json:"error,omitempty"`
}

// OutstandingDeadLetter is one dead letter nobody settled yet.
type OutstandingDeadLetter struct {
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Key       string    `json:"key"`
	Event     string    `json:"event,omitempty"`
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	FailedAt  time.Time `json:"failedAt"`
}

const (
	maxListed         = 20
	deadLettersMaxAge = 3 * time.Second
)

// MountDeadLetters serves GET /api/deadletters on srv, reading the DLQs
// and retry topics of t's steps and coordinator through kcfg. Reads are
// cached for a few seconds, so the UI's refresh does not rescan the DLQs
// every time.
func MountDeadLetters(srv *api.Server, kcfg kafka.Config, t *topology.Topology) {
	h := &deadLetterHandler{kcfg: kcfg, t: t}
	srv.Handle("GET /api/deadletters", h)
}

type deadLetterHandler struct {
	kcfg kafka.Config
	t    *topology.Topology

	mu   sync.Mutex // one read at a time; holds last
	last *DeadLetters
}

func (h *deadLetterHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last == nil || time.Since(h.last.At) > deadLettersMaxAge {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		h.last = ReadDeadLetters(ctx, h.kcfg, h.t)
		cancel()
	}
	api.WriteJSON(w, http.StatusOK, h.last)
}

// ReadDeadLetters reads the DLQ and retry topic of every step of t and of
// its coordinator. A DLQ that cannot be read is reported in its entry.
func ReadDeadLetters(ctx context.Context, kcfg kafka.Config, t *topology.Topology) *DeadLetters {
	out := &DeadLetters{At: time.Now()}
	for _, name := range append(t.StepNames(), saga.StepName(t)) {
		s := StepDeadLetters{Step: name, Topic: t.DLQ(name), Command: "troupe dlq list --step " + name}
		if name == saga.StepName(t) {
			s.Command = "troupe dlq list --coordinator " + t.Saga
		}
		if err := readStep(ctx, kcfg, t, &s); err != nil && !errors.Is(err, replay.ErrUnknownTopic) {
			s.Error = err.Error()
		}
		out.Steps = append(out.Steps, s)
	}
	return out
}

func readStep(ctx context.Context, kcfg kafka.Config, t *topology.Topology, s *StepDeadLetters) error {
	q, err := dlq.Open(ctx, kcfg, s.Step, t.DLQ(s.Step), t.RetryTopic(s.Step))
	if err != nil {
		return err
	}
	defer q.Close()
	outcomes, err := q.Outcomes(ctx)
	if err != nil {
		return err
	}
	return q.Scan(ctx, dlq.All(), func(d dlq.DeadLetter) error {
		if outcomes[d.At()].Settled() {
			s.Settled++
			return nil
		}
		s.Outstanding++
		if len(s.Letters) < maxListed {
			l := OutstandingDeadLetter{Partition: d.Record.Partition, Offset: d.Record.Offset, Key: string(d.Record.Key),
				Event: t.ShortName(d.Event.Type), Error: d.Error, Attempts: d.Attempts, FailedAt: d.FailedAt}
			if d.Malformed != nil {
				l.Error = d.Malformed.Error()
			}
			s.Letters = append(s.Letters, l)
		}
		return nil
	})
}
