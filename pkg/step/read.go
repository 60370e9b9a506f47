package step

import (
	"errors"
	"fmt"
	"slices"

	"github.com/troupehq/troupe/pkg/state"
)

// ErrNotRunning means the runtime's store is not open: Run has not started
// or has returned.
var ErrNotRunning = errors.New("step is not running")

// These read the committed state, from other goroutines than the step's
// loop (an HTTP API, a metrics collector). They see what the last committed
// interval applied: never state a transaction may still abort. Which
// partitions are current here is Partitions; a partition that moved away
// keeps its last state in the store until it comes back.

// ReadInstance returns the state (as the step encoded it, JSON for a
// Step[S]) of instance id in partition p, and false if it has none.
func (rt *Runtime) ReadInstance(p int32, id string) ([]byte, bool, error) {
	rt.storeMu.RLock()
	defer rt.storeMu.RUnlock()
	if rt.store == nil {
		return nil, false, ErrNotRunning
	}
	raw, ok, err := rt.store.Get(p, state.InstanceKey(id))
	if err != nil || !ok {
		return nil, false, err
	}
	inst, err := state.DecodeInstance(raw)
	if err != nil {
		return nil, false, fmt.Errorf("instance %q: %w", id, err)
	}
	return inst.State, inst.State != nil, nil
}

// ScanInstances calls fn for the instances of partition p that have state,
// in id order, starting after the id after ("" for the first), until fn
// returns false.
func (rt *Runtime) ScanInstances(p int32, after string, fn func(id string, state []byte) (bool, error)) error {
	rt.storeMu.RLock()
	defer rt.storeMu.RUnlock()
	if rt.store == nil {
		return ErrNotRunning
	}
	lower := []byte{state.KindInstance}
	if after != "" {
		lower = append(state.InstanceKey(after), 0)
	}
	return rt.store.ScanRange(p, lower, []byte{state.KindInstance + 1}, func(k, v []byte) (bool, error) {
		inst, err := state.DecodeInstance(v)
		if err != nil {
			return false, fmt.Errorf("instance %q: %w", k[1:], err)
		}
		if inst.State == nil {
			return true, nil
		}
		return fn(string(k[1:]), inst.State)
	})
}

// Handles lists the full names of the event types the step has a typed
// handler for, sorted, and whether it has a raw handler (HandleRaw) for the
// rest. Tools check a topology's on: against it.
func (rt *Runtime) Handles() (types []string, raw bool) {
	for name := range rt.byName {
		types = append(types, name)
	}
	slices.Sort(types)
	return types, rt.def.raw != nil
}
