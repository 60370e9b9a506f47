package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DefaultTopicWait is how long start-up waits, by default, for a topic that
// is not visible yet. A topic just created reaches the brokers of a cluster
// at different times (each follows the controller's metadata log), so a
// step started together with `troupe topics apply` (compose, Kubernetes, a
// test) may ask a broker that does not know the topic yet.
const DefaultTopicWait = 45 * time.Second

// TopicWait says how long AwaitTopics waits and where it reports progress.
// The zero value waits DefaultTopicWait and logs nowhere.
type TopicWait struct {
	// Max bounds the wait; default DefaultTopicWait. Negative: look once.
	Max time.Duration
	// Log gets a line every Every (default 5 s) naming the topics still
	// missing.
	Log   zerolog.Logger
	Every time.Duration
}

// MissingTopicsError is returned by AwaitTopics when topics were still not
// visible after the wait.
type MissingTopicsError struct {
	Topics []string
	Waited time.Duration
}

func (e *MissingTopicsError) Error() string {
	return fmt.Sprintf("topics %s not found after waiting %s", strings.Join(e.Topics, ", "), e.Waited.Round(time.Millisecond))
}

// AwaitTopics waits until every topic is visible on every broker that
// answers, and returns their metadata (as the first broker answering the
// last round described them). A topic is visible on a broker when its
// metadata lists it without error and with partitions. Asking every broker,
// not one, matters: the clients made next (consumer group, admin calls,
// restore) may ask any of them.
//
// It looks again with a backoff from 50 ms to 1 s until w.Max passes, then
// fails with a *MissingTopicsError naming the topics still missing; it
// returns ctx's error as soon as ctx is done.
func AwaitTopics(ctx context.Context, cl *kgo.Client, topics []string, w TopicWait) (map[string]kmsg.MetadataResponseTopic, error) {
	max := w.Max
	if max == 0 {
		max = DefaultTopicWait
	}
	every := w.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	start := time.Now()
	lastLog := start
	backoff := 50 * time.Millisecond
	for {
		found, missing, err := describeOnEveryBroker(ctx, cl, topics)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var pe *permanentError
		if errors.As(err, &pe) {
			return nil, pe.err
		}
		if err == nil && len(missing) == 0 {
			if waited := time.Since(start); waited > every {
				w.Log.Info().Strs("topics", topics).Dur("waited", waited).Msg("topics visible")
			}
			return found, nil
		}
		waited := time.Since(start)
		if max < 0 || waited >= max {
			if err != nil {
				return nil, fmt.Errorf("describe topics %s (waited %s): %w", strings.Join(topics, ", "), waited.Round(time.Millisecond), err)
			}
			return nil, &MissingTopicsError{Topics: missing, Waited: waited}
		}
		if now := time.Now(); now.Sub(lastLog) >= every {
			ev := w.Log.Info().Strs("missing", missing).Dur("waited", waited).Dur("max_wait", max)
			if err != nil {
				ev = ev.Err(err)
			}
			ev.Msg("waiting for topics to become visible on every broker (create them: troupe topics apply)")
			lastLog = now
		}
		t := time.NewTimer(min(backoff, max-waited))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// describeOnEveryBroker sends one metadata request for topics to every
// broker the cluster lists (direct requests: kgo's metadata cache would
// answer with what it saw up to 5 s ago). A broker that does not answer is
// down or unreachable and not asked again this round. It returns the
// metadata as the first answering broker gave it, and the topics some
// answering broker does not list.
func describeOnEveryBroker(ctx context.Context, cl *kgo.Client, topics []string) (map[string]kmsg.MetadataResponseTopic, []string, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	// Any broker first: it lists the brokers to ask.
	first, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, slices.Clone(topics), err
	}
	resps := []*kmsg.MetadataResponse{first}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range first.Brokers {
		wg.Add(1)
		go func(id int32) {
			defer wg.Done()
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := cl.Broker(int(id)).Request(bctx, req)
			if err != nil {
				return // down or unreachable: the others decide
			}
			mu.Lock()
			resps = append(resps, resp.(*kmsg.MetadataResponse))
			mu.Unlock()
		}(b.NodeID)
	}
	wg.Wait()

	found := make(map[string]kmsg.MetadataResponseTopic, len(topics))
	for _, t := range first.Topics {
		if t.Topic != nil {
			found[*t.Topic] = t
		}
	}
	var missing []string
	for _, name := range topics {
		all := true
		for _, r := range resps {
			ok, err := lists(r, name)
			if err != nil {
				return nil, nil, &permanentError{fmt.Errorf("describe topic %s: %w", name, err)}
			}
			all = all && ok
		}
		if !all {
			missing = append(missing, name)
			delete(found, name)
		}
	}
	return found, missing, nil
}

// lists reports whether r lists topic with its partitions. A topic error
// that waiting cannot fix (not authorized, an invalid name) is returned.
func lists(r *kmsg.MetadataResponse, topic string) (bool, error) {
	for _, t := range r.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case err == nil:
			return len(t.Partitions) > 0, nil
		case errors.Is(err, kerr.UnknownTopicOrPartition), kerr.IsRetriable(err):
			return false, nil
		default:
			return false, err
		}
	}
	return false, nil
}

// permanentError is a describe error that waiting cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
