// Package saga is the saga coordinator (README: Sagas): a built-in step that
// watches every event of a saga, keeps each instance's status and bounded
// history, fires deadlines, and drives compensation of the completed steps in
// reverse completion order, one at a time, re-sending a command whose ack
// does not come in time and failing the instance after the policy's attempts.
//
// Machine holds the rules, derived from the topology, as a pure state
// machine: (instance, event or timer) → (instance, actions). The scenarios in
// testdata/ are its specification; read them first. A saga begins only with
// its trigger: any other event of an id not started is an orphan, kept and
// counted, which a late trigger adopts only if the event follows from it
// (see OrphanWindow).
//
// Coordinator runs a Machine as a step (group <app>.saga.<saga>, changelog
// <app>.saga.<saga>.changelog) over every business topic of the saga:
// deadlines and compensation timeouts are durable timers, commands go to
// their topic and SagaEnded to <app>.saga.<saga>.ended, all in the step's
// transaction. It also watches (step.Watch) its steps' DLQ and retry
// topics, to record dead letters of an instance's events and their replays
// and discards in its history and its outstanding DeadLetters. ForStep gives every other step of the saga the runtime's
// side of the contract (step.Saga: SagaEnded, the compensation barrier).
//
// The API (Mount) reads a Store: the instances of the partitions one
// coordinator process holds, from its local state. Several processes form a
// Cluster: each advertises its API in its Kafka client id (ClientID), so the
// group's description maps partitions to processes; an instance elsewhere is
// a 307 to its owner, and stats and lists merge every process's answer for
// its own partitions (scope=local), failing with 503 rather than counting
// a partition twice or not at all.
//
//	RUNNING ──completes_on──▶ COMPLETED
//	   │ fails_on / deadline
//	   ▼
//	COMPENSATING ──all acks──▶ COMPENSATED
//	   │ an ack missing after the attempts
//	   ▼
//	FAILED
package saga
