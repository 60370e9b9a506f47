// Package saga is the saga coordinator (DESIGN §5): a built-in step that
// watches every event of a saga, keeps each instance's status and bounded
// history, fires deadlines, and drives compensation of the completed steps in
// reverse completion order, one at a time, re-sending a command whose ack
// does not come in time and failing the instance after the policy's attempts.
//
// Machine holds the rules, derived from the topology, as a pure state
// machine: (instance, event or timer) → (instance, actions). The scenarios in
// testdata/ are its specification; read them first.
//
//	RUNNING ──completes_on──▶ COMPLETED
//	   │ fails_on / deadline
//	   ▼
//	COMPENSATING ──all acks──▶ COMPENSATED
//	   │ an ack missing after the attempts
//	   ▼
//	FAILED
package saga
