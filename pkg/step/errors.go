package step

import (
	"errors"
	"fmt"
)

// Permanent marks err as one that retrying cannot fix: the record goes to
// the dead letters at once instead of being retried. Decode errors and
// recovered panics are permanent. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// RecordError is a record that could not be processed, with its
// coordinates: what an operator needs to find it, and what the dead-letter
// headers will carry.
type RecordError struct {
	Step      string // <app>.<step>
	Topic     string
	Partition int32
	Offset    int64
	Instance  string // the record key (saga instance id)
	Attempts  int
	Err       error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("step %s: record %s/%d@%d (instance %q, %d attempt(s)): %v",
		e.Step, e.Topic, e.Partition, e.Offset, e.Instance, e.Attempts, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }
