package step

import (
	"fmt"
	"time"
)

// The two decisions of the record path that are pure: what parking does
// with a record, and what a failure leads to. They take what the runtime
// knows and return a verdict; the runtime applies it (settle). Their
// behaviour is specified by testdata/parking.txt and testdata/retry.txt.

// parkFacts is what the parking decision looks at: where a record came
// from and the state of its instance's parking head.
type parkFacts struct {
	retryTopic bool // the record came from the step's retry topic
	discard    bool // it is a discard marker (troupe dlq discard)
	// discardMatches: the marker names the dead letter the head waits for
	// (same ce_id, or a marker without one).
	discardMatches bool
	hasHead        bool
	status         byte // the head's status, when hasHead
	replay         bool // a replay of a dead letter (troupe dlq replay)
	replayOfHead   bool // ... of the one the head waits for (same ce_id)
	unparked       bool // written back from the park, with its sequence number
	seq, last      uint64
}

// parkVerdict is what happens to a record before its handler.
type parkVerdict int

const (
	parkHandle         parkVerdict = iota // not blocked: on to the handler
	parkPark                              // park it behind the instance's dead letter
	parkKeepSeq                           // park it again under its own sequence number
	parkReleaseHandle                     // release the instance's parked events, then handle it
	parkDiscardRelease                    // a discard of the letter the instance waits for: release it
	parkDiscardIgnore                     // a discard marker for no outstanding dead letter
)

var parkVerdictNames = [...]string{"handle", "park", "park-keep-seq", "release-then-handle", "discard-release", "discard-ignored"}

func (v parkVerdict) String() string { return parkVerdictNames[v] }

// decidePark is the parking decision (see the comment at the top of
// park.go for the protocol).
func decidePark(f parkFacts) parkVerdict {
	switch {
	case f.retryTopic && f.discard:
		if f.hasHead && f.status == headWaiting && f.discardMatches {
			return parkDiscardRelease
		}
		return parkDiscardIgnore
	case !f.hasHead:
		return parkHandle
	case f.retryTopic && f.replay:
		switch {
		case !f.replayOfHead:
			return parkPark // a replay of another dead letter waits its turn
		case f.status == headWaiting:
			return parkReleaseHandle // released before it runs
		}
		return parkHandle
	case f.retryTopic && f.unparked:
		switch {
		case f.status == headWaiting:
			return parkKeepSeq // blocked again while draining
		case f.seq >= f.last:
			return parkReleaseHandle // the last one back: release what came meanwhile
		}
		return parkHandle
	}
	return parkPark
}

// failFacts is what the retry decision looks at.
type failFacts struct {
	attempt      int  // which attempt failed, 1-based
	permanent    bool // IsPermanent: retrying cannot fix it
	shuttingDown bool // the step's context ended: the call was cut short
	// partitionHeld: the partition already holds at another record in this
	// interval (records of other instances ran concurrently).
	partitionHeld bool
}

// failVerdict is what a failed record leads to.
type failVerdict struct {
	kind failKind
	wait time.Duration // before the next attempt, for failRetry (before jitter)
}

type failKind int

const (
	failRetry      failKind = iota // hold the partition at the record; retry after wait
	failAgain                      // not an attempt: run it again when the partition resumes
	failDeadLetter                 // write it to the DLQ, move on, block its instance
	failStop                       // stop the partition (RetryPolicy.StopPartition)
)

func (v failVerdict) String() string {
	switch v.kind {
	case failRetry:
		return fmt.Sprintf("retry after %s", v.wait)
	case failAgain:
		return "again (not an attempt)"
	case failDeadLetter:
		return "dead-letter"
	}
	return "stop-partition"
}

// decideFail is the retry decision of policy p for a failure.
func decideFail(p RetryPolicy, f failFacts) failVerdict {
	p = p.withDefaults()
	switch {
	case f.shuttingDown, f.partitionHeld && !f.permanent:
		// A call cut short by shutdown did not really fail; one that ran
		// beside the record its partition holds at runs again after it.
		return failVerdict{kind: failAgain}
	case !f.permanent && f.attempt < p.Attempts:
		return failVerdict{kind: failRetry, wait: p.Backoff(f.attempt)}
	case p.StopPartition:
		return failVerdict{kind: failStop}
	}
	return failVerdict{kind: failDeadLetter}
}
