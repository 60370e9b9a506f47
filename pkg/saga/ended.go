package saga

import (
	"fmt"
	"time"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/schemas"
)

// EndedType is the full name of Ended, the ce_type of SagaEnded.
const EndedType = "troupe.saga.SagaEnded"

// Ended is the event SagaEnded (schemas/SagaEnded.avsc, namespace
// troupe.saga): the coordinator emits it to <app>.saga.<saga>.ended when an
// instance reaches a final status, and every step of the saga consumes it
// (step.Saga).
type Ended struct {
	SagaID  string    `avro:"sagaId" json:"sagaId"`
	Saga    string    `avro:"saga" json:"saga"`
	Status  string    `avro:"status" json:"status"`
	Reason  string    `avro:"reason" json:"reason"`
	EndedAt time.Time `avro:"endedAt" json:"endedAt"`
}

// Register registers Ended with its schema on s. Registering it again (as
// an app's own Register may, from the same file) is a no-op.
func Register(s *avro.Serde) error {
	files, err := schemas.All()
	if err != nil {
		return fmt.Errorf("read embedded schemas: %w", err)
	}
	for _, f := range files {
		if f.FullName == EndedType {
			return s.Register(Ended{}, f.Text)
		}
	}
	return fmt.Errorf("schema %s is not among the embedded schemas", EndedType)
}

// ForStep derives the saga rules of step name from the topology: what
// step.Config.Saga needs. It returns nil for a name that is not a step of t.
func ForStep(t *topology.Topology, name string) *step.Saga {
	s, ok := t.Step(name)
	if !ok {
		return nil
	}
	sc := &step.Saga{EndedTopic: t.EndedTopic(), CompletedBy: s.CompletedBy, Retention: t.Retention, Trigger: t.Trigger}
	for _, other := range t.Steps {
		for _, ev := range other.Emits {
			if ev == t.Trigger {
				continue
			}
			if sc.Sources == nil {
				sc.Sources = map[string][]string{}
			}
			sc.Sources[ev] = append(sc.Sources[ev], t.Group(other.Name))
		}
	}
	if c := s.Compensation; c.Command != "" {
		sc.Command, sc.Ack, sc.KeyField = c.Command, c.Ack, t.Key
		sc.AckTopic, _ = t.TopicOf(c.Ack)
	}
	return sc
}
