package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
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
	// Actions says whether this server replays and discards dead letters
	// (POST /api/deadletters/...): "" when it does, else why not and what
	// to do.
	Actions string `json:"actionsOff,omitempty"`
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

// MountDeadLetters serves on srv, for the DLQs and retry topics of t's
// steps and coordinator, through kcfg:
//
//	GET  /api/deadletters                                   the outstanding dead letters
//	POST /api/deadletters/{step}/{partition}/{offset}/replay   body {"dryRun":bool}
//	POST /api/deadletters/{step}/{partition}/{offset}/discard  body {"dryRun":bool}
//
// Reads are cached for a few seconds, so the UI's refresh does not rescan
// the DLQs every time. A replay or discard does what `troupe dlq replay|
// discard --step STEP --partition P --offset N [--dry-run]` does (the same
// dlq.Queue calls): it writes to the step's retry topic, where the
// coordinator reads it into the instance's history. They are taken only
// when srv allows actions (api.Server.Allow).
func MountDeadLetters(srv *api.Server, kcfg kafka.Config, t *topology.Topology, log zerolog.Logger) {
	h := &deadLetterHandler{kcfg: kcfg, t: t, srv: srv, log: log}
	srv.Handle("GET /api/deadletters", h)
	srv.Handle("POST /api/deadletters/{step}/{partition}/{offset}/{action}", http.HandlerFunc(h.act))
}

type deadLetterHandler struct {
	kcfg kafka.Config
	t    *topology.Topology
	srv  *api.Server
	log  zerolog.Logger

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
	out := *h.last
	if err := h.srv.Actions(); err != nil {
		out.Actions = err.Error()
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// ActionResult is the answer of a replay or discard.
type ActionResult struct {
	Step      string `json:"step"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Key is the dead letter's key: its saga instance.
	Key    string `json:"key,omitempty"`
	Action string `json:"action"` // replay or discard
	DryRun bool   `json:"dryRun"`
	// Written is how many records were written (in a dry run: would be).
	Written int `json:"written"`
	// To is where the record went (or would go): the retry topic, its
	// partition and, unless a dry run, its offset.
	To      string `json:"to,omitempty"`
	Message string `json:"message"`
}

func (h *deadLetterHandler) act(w http.ResponseWriter, r *http.Request) {
	if !h.srv.Allow(w, r) {
		return
	}
	name, action := r.PathValue("step"), r.PathValue("action")
	p, perr := strconv.ParseInt(r.PathValue("partition"), 10, 32)
	off, oerr := strconv.ParseInt(r.PathValue("offset"), 10, 64)
	var body struct {
		DryRun bool `json:"dryRun"`
	}
	known := slices.Contains(append(h.t.StepNames(), saga.StepName(h.t)), name)
	switch {
	case action != "replay" && action != "discard":
		api.WriteError(w, http.StatusNotFound, "no action %q: replay or discard", action)
		return
	case !known:
		api.WriteError(w, http.StatusNotFound, "no step %q in saga %s (its steps: %s, and the coordinator %s)", name, h.t.Saga, strings.Join(h.t.StepNames(), ", "), saga.StepName(h.t))
		return
	case perr != nil || p < 0 || oerr != nil || off < 0:
		api.WriteError(w, http.StatusBadRequest, "partition and offset must be numbers of 0 or more (the dead letter's place in %s, as GET /api/deadletters lists it)", h.t.DLQ(name))
		return
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		api.WriteError(w, http.StatusBadRequest, `the body must be {"dryRun": true|false}: %v`, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res := ActionResult{Step: name, Partition: int32(p), Offset: off, Action: action, DryRun: body.DryRun}
	status, err := h.send(ctx, &res)
	log := h.log.With().Str(logging.FieldSaga, res.Key).Str(logging.FieldStep, name).Str(logging.FieldTopic, h.t.DLQ(name)).Int32(logging.FieldPartition, res.Partition).
		Int64(logging.FieldOffset, off).Str("action", action).Bool("dry_run", body.DryRun).Str("remote", r.RemoteAddr).Logger()
	if err != nil {
		log.Warn().Err(err).Msg("dead-letter action from the API refused or failed")
		api.WriteError(w, status, "%s %s: %v", action, dlq.Coordinates{Topic: h.t.DLQ(name), Partition: res.Partition, Offset: off}, err)
		return
	}
	if !body.DryRun {
		log.Info().Str("to", res.To).Msg("dead letter " + map[string]string{"replay": "replayed", "discard": "discarded"}[action] + " from the API")
		h.mu.Lock()
		h.last = nil // the next GET reads the DLQs again
		h.mu.Unlock()
	}
	api.WriteJSON(w, status, res)
}

// send replays or discards the dead letter of res as `troupe dlq` does,
// fills res in and returns the status to answer.
func (h *deadLetterHandler) send(ctx context.Context, res *ActionResult) (int, error) {
	q, err := dlq.Open(ctx, h.kcfg, res.Step, h.t.DLQ(res.Step), h.t.RetryTopic(res.Step))
	if errors.Is(err, replay.ErrUnknownTopic) {
		return http.StatusNotFound, err
	}
	if err != nil {
		return http.StatusBadGateway, err
	}
	defer q.Close()
	opts := dlq.SendOptions{DryRun: res.DryRun, OnSent: func(d dlq.DeadLetter, rec *kgo.Record) {
		res.Key = string(d.Record.Key)
		res.To = fmt.Sprintf("%s partition %d", rec.Topic, rec.Partition)
		if !res.DryRun {
			res.To += fmt.Sprintf(" offset %d", rec.Offset)
		}
	}}
	sel := dlq.At(res.Partition, res.Offset)
	if res.Action == "replay" {
		res.Written, err = q.Replay(ctx, sel, opts)
	} else {
		res.Written, err = q.Discard(ctx, sel, opts)
	}
	var se *dlq.SettledError
	var oe *dlq.OffsetError
	switch {
	case errors.As(err, &se):
		return http.StatusConflict, fmt.Errorf("%w; nothing written (troupe dlq %s --step %s --partition %d --offset %d --force writes anyway)", err, res.Action, res.Step, res.Partition, res.Offset)
	case errors.As(err, &oe):
		return http.StatusNotFound, err
	case err != nil:
		return http.StatusBadGateway, err
	}
	verb := map[string]string{"replay": "replayed", "discard": "discarded"}[res.Action]
	switch {
	case res.DryRun:
		res.Message = fmt.Sprintf("dry run: would be %s into %s; nothing written", verb, res.To)
	case res.Action == "replay":
		res.Message = fmt.Sprintf("replayed into %s: step %s runs it again, then the instance's parked events", res.To, res.Step)
	default:
		res.Message = fmt.Sprintf("discarded (marker in %s): step %s drops it and runs the instance's parked events", res.To, res.Step)
	}
	return http.StatusOK, nil
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
