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

// MissingTopicsError is returned by AwaitTopics when topics were still
// listed by no broker after the wait.
type MissingTopicsError struct {
	Topics []string
	Waited time.Duration
}

func (e *MissingTopicsError) Error() string {
	return fmt.Sprintf("topics %s not found after waiting %s", strings.Join(e.Topics, ", "), e.Waited.Round(time.Millisecond))
}

// AwaitTopics waits until every topic is visible on every broker that
// answers, and returns their metadata. A topic is visible on a broker when
// its metadata lists it without error and with partitions. Asking every
// broker, not one, matters: the clients made next (consumer group, admin
// calls, restore) may ask any of them.
//
// It looks again with a backoff from 50 ms to 1 s until w.Max passes. Then
// a topic that some broker lists is "not yet" everywhere, and is returned
// with a warning naming the brokers that lag; a topic that no broker lists
// is missing: AwaitTopics fails with a *MissingTopicsError naming those. It
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
		v, err := describeOnEveryBroker(ctx, cl, topics)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var pe *permanentError
		if errors.As(err, &pe) {
			return nil, pe.err
		}
		missing := v.missing()
		if err == nil && len(missing) == 0 {
			if waited := time.Since(start); waited > every {
				w.Log.Info().Strs("topics", topics).Dur("waited", waited).Msg("topics visible")
			}
			return v.found, nil
		}
		waited := time.Since(start)
		if max < 0 || waited >= max {
			if err != nil {
				return nil, fmt.Errorf("describe topics %s (waited %s): %w", strings.Join(topics, ", "), waited.Round(time.Millisecond), err)
			}
			if len(v.nowhere) > 0 {
				return nil, &MissingTopicsError{Topics: v.nowhere, Waited: waited}
			}
			w.Log.Warn().Strs("topics", missing).Interface("unaware_brokers", v.unaware).Dur("waited", waited).
				Msg("topics exist but some brokers still do not list them; going on (check those brokers' metadata replication)")
			return v.found, nil
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

// visibility is what one round of metadata requests found.
type visibility struct {
	topics []string
	// found has each topic as a broker listing it described it.
	found map[string]kmsg.MetadataResponseTopic
	// unaware has, for each topic some broker lists, the brokers that
	// answered without it.
	unaware map[string][]int32
	// nowhere are the topics no answering broker lists.
	nowhere []string
}

// missing are the topics not visible on every answering broker, in the
// order asked.
func (v visibility) missing() []string {
	var out []string
	for _, t := range v.topics {
		if _, ok := v.unaware[t]; ok || slices.Contains(v.nowhere, t) {
			out = append(out, t)
		}
	}
	return out
}

// describeOnEveryBroker sends one metadata request for topics to every
// broker the cluster lists (direct requests: kgo's metadata cache would
// answer with what it saw up to 5 s ago). A broker that does not answer
// within 3 s is down or unreachable and does not count this round.
func describeOnEveryBroker(ctx context.Context, cl *kgo.Client, topics []string) (visibility, error) {
	v := visibility{topics: topics, found: map[string]kmsg.MetadataResponseTopic{}, unaware: map[string][]int32{}}
	// A request per broker: the client sets each one's version as it sends
	// it, so one shared by concurrent requests would race.
	newReq := func() *kmsg.MetadataRequest {
		req := kmsg.NewPtrMetadataRequest()
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
		return req
	}
	// Any broker first: it lists the brokers to ask.
	first, err := newReq().RequestWith(ctx, cl)
	if err != nil {
		v.nowhere = slices.Clone(topics)
		return v, err
	}
	type answer struct {
		broker int32
		resp   *kmsg.MetadataResponse
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		answers []answer
	)
	for _, b := range first.Brokers {
		wg.Add(1)
		go func(id int32) {
			defer wg.Done()
			bctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			resp, err := cl.Broker(int(id)).Request(bctx, newReq())
			if err != nil {
				return // down or unreachable: the others decide
			}
			mu.Lock()
			answers = append(answers, answer{id, resp.(*kmsg.MetadataResponse)})
			mu.Unlock()
		}(b.NodeID)
	}
	wg.Wait()
	if len(answers) == 0 {
		answers = append(answers, answer{-1, first})
	}
	slices.SortFunc(answers, func(a, b answer) int { return int(a.broker - b.broker) })

	for _, name := range topics {
		var unaware []int32
		for _, a := range answers {
			t, ok, err := listed(a.resp, name)
			if err != nil {
				return v, &permanentError{fmt.Errorf("describe topic %s: %w", name, err)}
			}
			if !ok {
				unaware = append(unaware, a.broker)
				continue
			}
			if _, have := v.found[name]; !have {
				v.found[name] = t
			}
		}
		switch {
		case len(unaware) == len(answers):
			v.nowhere = append(v.nowhere, name)
		case len(unaware) > 0:
			v.unaware[name] = unaware
		}
	}
	return v, nil
}

// listed returns topic as r lists it with its partitions. A topic error
// that waiting cannot fix (not authorized, an invalid name) is returned.
func listed(r *kmsg.MetadataResponse, topic string) (kmsg.MetadataResponseTopic, bool, error) {
	for _, t := range r.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case err == nil:
			return t, len(t.Partitions) > 0, nil
		case errors.Is(err, kerr.UnknownTopicOrPartition), kerr.IsRetriable(err):
			return t, false, nil
		default:
			return t, false, err
		}
	}
	return kmsg.MetadataResponseTopic{}, false, nil
}

// permanentError is a describe error that waiting cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
