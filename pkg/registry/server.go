package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/kafka"
)

// DefaultTopic is where the registry keeps its state.
const DefaultTopic = "_schemas"

// Config configures a Server.
type Config struct {
	// Kafka is the cluster that holds the topic. Required.
	Kafka kafka.Config
	// Topic is the compacted topic that stores schemas and settings. It is
	// created with one partition and cleanup.policy=compact if missing.
	// Default "_schemas".
	Topic string
	// DefaultLevel is the global compatibility level until one is set with
	// PUT /config. Default BACKWARD.
	DefaultLevel Level
	// ReplicationFactor is used when creating the topic. Default -1: the
	// broker's default.
	ReplicationFactor int16
	// LoadTimeout bounds how long a request waits for the registry to finish
	// reading the topic at start (it then fails with 503). Default 30 s.
	LoadTimeout time.Duration
	// TopicWait bounds how long Run waits at start for the topic, once
	// created, to be visible on every broker (kafka.TopicWait). Default
	// kafka.DefaultTopicWait.
	TopicWait time.Duration

	// MaxSchemaBytes bounds a schema's compact text; a larger one is
	// refused with 422, a request body over twice that with 413. Default
	// DefaultMaxSchemaBytes (256 KiB).
	MaxSchemaBytes int
	// MaxSchemaDepth bounds how deeply a schema's JSON nests objects and
	// arrays (422 beyond). Default DefaultMaxSchemaDepth (96).
	MaxSchemaDepth int
	// CheckTimeout bounds one compatibility check, including the wait for
	// its turn. Default DefaultCheckTimeout (10 s).
	CheckTimeout time.Duration
	// MaxChecks is how many compatibility checks run at once. Default
	// DefaultMaxChecks (2).
	MaxChecks int

	// Auth are the tokens every request needs (package auth); a read token
	// may only read, look schemas up and check compatibility. Default: none,
	// every request is served.
	Auth auth.Tokens
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Topic == "" {
		out.Topic = DefaultTopic
	}
	if out.DefaultLevel == "" {
		out.DefaultLevel = Backward
	}
	if out.ReplicationFactor == 0 {
		out.ReplicationFactor = -1
	}
	if out.LoadTimeout == 0 {
		out.LoadTimeout = 30 * time.Second
	}
	if out.MaxSchemaBytes <= 0 {
		out.MaxSchemaBytes = DefaultMaxSchemaBytes
	}
	if out.MaxSchemaDepth <= 0 {
		out.MaxSchemaDepth = DefaultMaxSchemaDepth
	}
	if out.CheckTimeout <= 0 {
		out.CheckTimeout = DefaultCheckTimeout
	}
	if out.MaxChecks <= 0 {
		out.MaxChecks = DefaultMaxChecks
	}
	return out
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DefaultLevel != "" {
		if _, err := ParseLevel(string(c.DefaultLevel)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Server is troupe's built-in schema registry: the subset of the Confluent
// Schema Registry REST API that serializers use, backed by a compacted Kafka
// topic. It is an http.Handler; Run keeps its state in step with the topic.
// Any number of Servers may share one topic: they derive the same ids from
// it (see the package documentation).
type Server struct {
	cfg      Config
	log      zerolog.Logger
	checker  *checker
	checks   chan struct{}  // a token per compatibility check running (compat)
	checking sync.WaitGroup // compatibility checks running, even those given up on
	handler  http.Handler

	mu        sync.RWMutex
	st        *state
	advanced  chan struct{} // closed and replaced whenever st.applied moves
	cl        *kgo.Client   // set by Run once connected
	adm       *kadm.Client
	ready     chan struct{} // closed when the topic has been read to its end at start
	readyOnce sync.Once

	// writeMu serialises this instance's writes, so that its own proposals
	// never race each other; races with other instances are settled by the
	// log.
	writeMu sync.Mutex
}

// New returns a Server; call Run to connect it to Kafka and load its state.
// Requests wait (up to cfg.LoadTimeout) until it has.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:      cfg,
		log:      log.With().Str("component", "registry").Str("topic", cfg.Topic).Logger(),
		checker:  newChecker(),
		checks:   make(chan struct{}, cfg.MaxChecks),
		st:       newState(),
		advanced: make(chan struct{}),
		ready:    make(chan struct{}),
	}
	s.handler = withAuth(s.routes(), cfg.Auth)
	return s, nil
}

// ServeHTTP serves the registry API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Ready is closed once the registry has read its topic to the end after
// Run started, and serves current data.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Serve runs the registry and serves its API on ln until ctx is done, then
// shuts the HTTP server down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve registry on %s: %w", ln.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	err := g.Wait()
	s.checking.Wait()
	return err
}

// Run connects to Kafka, creates the topic if needed, reads it to the end,
// and then follows it, applying changes from every instance, until ctx is
// done. It returns nil when ctx is cancelled, or the error that stopped it.
func (s *Server) Run(ctx context.Context) error {
	cl, err := kafka.NewClient(ctx, s.cfg.Kafka,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return fmt.Errorf("schema registry: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := s.ensureTopic(ctx, cl, adm); err != nil {
		return err
	}
	end, err := s.endOffset(ctx, adm)
	if err != nil {
		return err
	}
	// Consume only once the topic exists: a consumer that starts on a
	// missing topic backs off before it looks again.
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{s.cfg.Topic: {0: kgo.NewOffset().AtStart()}})
	s.mu.Lock()
	s.cl, s.adm = cl, adm
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cl, s.adm = nil, nil
		s.mu.Unlock()
	}()
	s.log.Debug().Int64("end", end).Msg("loading schemas")
	start := time.Now()
	if end == 0 {
		s.markReady(start)
	}

	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			s.log.Warn().Err(err).Msg("reading the schemas topic")
		})
		s.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) {
			if err := s.st.apply(r.Key, r.Value, r.Offset); err != nil {
				s.log.Warn().Err(err).Msg("schemas topic")
			}
		})
		applied := s.st.applied
		close(s.advanced)
		s.advanced = make(chan struct{})
		s.mu.Unlock()
		if applied >= end {
			s.markReady(start)
		}
	}
}

func (s *Server) markReady(start time.Time) {
	s.readyOnce.Do(func() {
		s.mu.RLock()
		n, ids := len(s.st.subjects), len(s.st.byID)
		s.mu.RUnlock()
		s.log.Info().Int("subjects", n).Int("schemas", ids).Dur("took", time.Since(start)).Msg("schema registry ready")
		close(s.ready)
	})
}

// ensureTopic creates the topic if it is missing and waits until every
// broker sees it: on a cluster, the brokers learn of a new topic at
// different times, and the first read may go to any of them.
func (s *Server) ensureTopic(ctx context.Context, cl *kgo.Client, adm *kadm.Client) error {
	compact := "compact"
	_, err := adm.CreateTopic(ctx, 1, s.cfg.ReplicationFactor, map[string]*string{"cleanup.policy": &compact}, s.cfg.Topic)
	switch {
	case err == nil:
		s.log.Info().Msg("created the schemas topic (1 partition, compacted)")
	case errors.Is(err, kerr.TopicAlreadyExists):
	default:
		return fmt.Errorf("create schemas topic %s: %w", s.cfg.Topic, err)
	}
	topics, err := kafka.AwaitTopics(ctx, cl, []string{s.cfg.Topic}, kafka.TopicWait{Max: s.cfg.TopicWait, Log: s.log})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("schemas topic %s exists but not on every broker: %w (check the brokers' logs)", s.cfg.Topic, err)
	}
	if n := len(topics[s.cfg.Topic].Partitions); n != 1 {
		return fmt.Errorf("schemas topic %s has %d partitions; it needs exactly 1 so that every instance applies changes in one order (recreate it, or set another topic)", s.cfg.Topic, n)
	}
	return nil
}

// endOffset returns the end offset of the topic's partition, retrying
// briefly: a topic just created may not be visible to every broker yet.
func (s *Server) endOffset(ctx context.Context, adm *kadm.Client) (int64, error) {
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		offs, err := adm.ListEndOffsets(ctx, s.cfg.Topic)
		if err == nil {
			o, ok := offs.Lookup(s.cfg.Topic, 0)
			switch {
			case ok && o.Err == nil:
				return o.Offset, nil
			case ok:
				err = o.Err
			default:
				err = errors.New("partition 0 not listed")
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("end offset of schemas topic %s: %w", s.cfg.Topic, lastErr)
}

// waitReady waits until the topic has been loaded, or fails with 503.
func (s *Server) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
	}
	t := time.NewTimer(s.cfg.LoadTimeout)
	defer t.Stop()
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return &apiError{status: http.StatusServiceUnavailable, Code: 50003,
			Message: fmt.Sprintf("the registry has not finished loading topic %s; is Kafka reachable?", s.cfg.Topic)}
	}
}

// waitApplied waits until the records before offset have been applied.
func (s *Server) waitApplied(ctx context.Context, offset int64) error {
	for {
		s.mu.RLock()
		applied, ch := s.st.applied, s.advanced
		s.mu.RUnlock()
		if applied >= offset {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the schemas topic to reach offset %d: %w", offset, ctx.Err())
		}
	}
}

// catchUp waits until this instance has applied everything in the topic
// now, so that it answers with what other instances wrote just before.
func (s *Server) catchUp(ctx context.Context) error {
	s.mu.RLock()
	adm := s.adm
	s.mu.RUnlock()
	if adm == nil {
		return errNotRunning
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	end, err := s.endOffset(ctx, adm)
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, end)
}

var errNotRunning = &apiError{status: http.StatusServiceUnavailable, Code: 50003, Message: "the registry is not connected to Kafka"}

// write appends one record to the topic and waits until this instance has
// applied it: a write is visible here when write returns.
func (s *Server) write(ctx context.Context, key recordKey, value any) error {
	s.mu.RLock()
	cl := s.cl
	s.mu.RUnlock()
	if cl == nil {
		return errNotRunning
	}
	key.Troupe = 1
	k, err := json.Marshal(key)
	if err != nil {
		return err
	}
	var v []byte
	if value != nil {
		if v, err = json.Marshal(value); err != nil {
			return err
		}
	}
	rec := &kgo.Record{Topic: s.cfg.Topic, Partition: 0, Key: k, Value: v}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return &apiError{status: http.StatusInternalServerError, Code: 50001,
			Message: fmt.Sprintf("write to %s: %v", s.cfg.Topic, err)}
	}
	return s.waitApplied(ctx, rec.Offset+1)
}

func newProposal() string { return uuid.NewString() }

// register registers req's schema under subject and returns its id. In
// IMPORT mode, a schema may come with the id (and version) it has
// elsewhere, and is not checked for compatibility.
func (s *Server) register(ctx context.Context, subject string, req schemaRequest) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.catchUp(ctx); err != nil {
		return 0, err
	}
	for attempt := 0; attempt < 10; attempt++ {
		s.mu.RLock()
		p, c, done, err := s.propose(subject, req)
		importing := s.st.modeOf(subject) == Import
		level := s.st.level(subject, s.cfg.DefaultLevel)
		against := s.existing(subject)
		s.mu.RUnlock()
		if err != nil || done {
			return p.ID, err
		}
		if !importing {
			// Outside the lock: a check may take seconds, and the topic's
			// follower needs the lock to apply what arrives.
			msgs, err := s.compat(ctx, level, c.schema, against)
			if err != nil {
				return 0, err
			}
			if len(msgs) > 0 {
				return 0, incompatible(subject, msgs)
			}
		}
		if err := s.write(ctx, recordKey{Kind: kindSchema, Subject: subject, Version: p.Version, Proposal: newProposal()}, p); err != nil {
			return 0, err
		}
		s.mu.RLock()
		v := s.st.subjects[subject].find(p.Version)
		won := v != nil && s.st.byID[v.id].ident == c.ident
		s.mu.RUnlock()
		if won {
			if attempt > 0 {
				s.log.Debug().Str("subject", subject).Int("attempts", attempt+1).Msg("registered after losing to a concurrent write")
			}
			return v.id, nil
		}
		// Another instance claimed the version or the id first: try again
		// from the state that includes its write.
	}
	return 0, &apiError{status: http.StatusInternalServerError, Code: 50001,
		Message: "could not register the schema: 10 attempts lost to concurrent writers; retry"}
}

// propose returns the record that registers req's schema under subject, or
// done with the id when it is registered there already. The caller holds
// s.mu.
func (s *Server) propose(subject string, req schemaRequest) (p schemaValue, c *stored, done bool, err error) {
	mode := s.st.modeOf(subject)
	if err := s.writable(subject); err != nil {
		return p, nil, false, err
	}
	if (req.ID > 0 || req.Version > 0) && mode != Import {
		return p, nil, false, errNotPermitted(fmt.Sprintf("Subject %s is not in import mode: a schema may come with an id or a version only in IMPORT mode (PUT /mode/%s {\"mode\":\"IMPORT\"})", quote(subject), quote(subject)))
	}
	c, err = s.candidate(req)
	if err != nil {
		return p, nil, false, err
	}
	ident := c.ident
	if v := s.st.versionOf(subject, ident, false); v != nil && (req.ID <= 0 || v.id == req.ID) && (req.Version <= 0 || v.version == req.Version) {
		return schemaValue{ID: v.id}, nil, true, nil
	}
	p = s.st.proposal(subject, c.text, ident)
	p.References, p.Metadata, p.RuleSet = c.refs, c.metadata, c.ruleSet
	if req.Version > 0 {
		p.Version = req.Version
	}
	p.Import = mode == Import
	if req.ID > 0 {
		if st := s.st.byID[req.ID]; st != nil && st.ident != ident {
			return p, nil, false, errNotPermitted(fmt.Sprintf("Overwrite new schema with id %d is not permitted: the id holds another schema", req.ID))
		}
		if id, ok := s.st.idOf[ident]; ok && id != req.ID {
			return p, nil, false, errNotPermitted(fmt.Sprintf("the schema has id %d here already, and troupe's built-in registry gives a schema one id; import it with id %d", id, id))
		}
		p.ID = req.ID
	}
	if sub := s.st.subjects[subject]; sub != nil {
		if v := sub.find(p.Version); v != nil {
			if v.id == p.ID {
				return p, nil, true, nil
			}
			return p, nil, false, errNotPermitted(fmt.Sprintf("version %d of subject %s holds another schema (id %d)", p.Version, quote(subject), v.id))
		}
	}
	return p, c, false, nil
}

// existing returns subject's live versions with their schemas, oldest
// first. The caller holds s.mu.
func (s *Server) existing(subject string) []existing {
	sub := s.st.subjects[subject]
	if sub == nil {
		return nil
	}
	var out []existing
	for _, v := range sub.live() {
		out = append(out, existing{version: v.version, schema: s.st.byID[v.id].schema})
	}
	return out
}

func incompatible(subject string, msgs []string) error {
	return &apiError{status: http.StatusConflict, Code: 409,
		Message: fmt.Sprintf("Schema being registered is incompatible with an earlier schema for subject %q, details: %s",
			quote(subject), joinMessages(msgs))}
}

func joinMessages(msgs []string) string {
	var b bytes.Buffer
	for i, m := range msgs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(m)
	}
	return b.String()
}
