package orders

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
)

// Outcome is what the example saga does with an order (README: The example saga).
type Outcome string

// The outcomes of the example saga.
const (
	OutcomeCompleted  Outcome = "completed"
	OutcomeDeclined   Outcome = "declined"     // PaymentDeclined
	OutcomeOutOfStock Outcome = "out-of-stock" // OutOfStock; payment refunded
	OutcomeShipFailed Outcome = "ship-failed"  // ShipmentFailed; inventory released, payment refunded
	OutcomeTimedOut   Outcome = "timed-out"    // SLOW- sku: the deadline passes; payment refunded
	// ERR- sku: a dead letter at inventory; the deadline passes; payment
	// refunded. Not in the demo mix: each holds its partition for the
	// retries' backoff.
	OutcomeDeadLettered Outcome = "dead-lettered"
	demoSource                  = "troupe-demo"
	demoCustomerIDCount         = 500
)

// NewOrder returns an order whose saga ends with outcome o.
func NewOrder(id string, o Outcome, at time.Time) OrderPlaced {
	ord := OrderPlaced{
		OrderID:     id,
		CustomerID:  fmt.Sprintf("cust-%03d", rand.IntN(demoCustomerIDCount)),
		AmountCents: int64(500 + rand.IntN(50_000)),
		Currency:    "EUR",
		Items:       []LineItem{{SKU: fmt.Sprintf("BOOK-%d", rand.IntN(100)), Quantity: int32(1 + rand.IntN(3))}},
		ShipTo:      Address{Name: "Ada Lovelace", Line1: "12 St James's Square", City: "London", Country: "GB"},
		PlacedAt:    at.UTC().Truncate(time.Millisecond),
	}
	switch o {
	case OutcomeDeclined:
		ord.AmountCents = DeclineAboveCents + 1 + int64(rand.IntN(100_000))
	case OutcomeOutOfStock:
		ord.Items = append(ord.Items, LineItem{SKU: OutOfStockPrefix + "LAMP", Quantity: 1})
	case OutcomeShipFailed:
		ord.ShipTo.Country = UnshippableCountry
	case OutcomeTimedOut:
		ord.Items = append(ord.Items, LineItem{SKU: SlowPrefix + "PIANO", Quantity: 1})
	case OutcomeDeadLettered:
		ord.Items = append(ord.Items, LineItem{SKU: FailPrefix + "CLOCK", Quantity: 1})
	}
	return ord
}

// DemoMix is the demo load's share of each outcome, in percent.
var DemoMix = []struct {
	Outcome Outcome
	Percent int
}{
	{OutcomeCompleted, 70},
	{OutcomeDeclined, 8},
	{OutcomeOutOfStock, 8},
	{OutcomeShipFailed, 8},
	{OutcomeTimedOut, 6},
}

func pickOutcome() Outcome {
	n := rand.IntN(100)
	for _, m := range DemoMix {
		if n < m.Percent {
			return m.Outcome
		}
		n -= m.Percent
	}
	return OutcomeCompleted
}

// Demo produces orders at a steady rate with DemoMix's outcomes.
type Demo struct {
	Client *kgo.Client
	Serde  *avro.Serde
	// Topic is where orders are placed; default TopicOrders.
	Topic string
	// Rate is orders per second.
	Rate float64
	// Placed counts the orders produced so far.
	Placed atomic.Int64
}

// Run produces orders until ctx is done. Order ids carry the start time, so
// a restarted demo never reuses one.
func (d *Demo) Run(ctx context.Context) error {
	if d.Rate <= 0 {
		return nil
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / d.Rate))
	defer tick.Stop()
	run := time.Now().Format("150405")
	topic := d.Topic
	if topic == "" {
		topic = TopicOrders
	}
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			ord := NewOrder(fmt.Sprintf("order-%s-%05d", run, n), pickOutcome(), now)
			rec, err := Record(ctx, d.Serde, topic, ord, demoSource)
			if err != nil {
				return err
			}
			d.Client.Produce(ctx, rec, func(_ *kgo.Record, err error) {
				if err == nil {
					d.Placed.Add(1)
				}
			})
		}
	}
}

// Record encodes an order as a record of topic, keyed by its id, with fresh
// CloudEvents headers from source.
func Record(ctx context.Context, s *avro.Serde, topic string, o OrderPlaced, source string) (*kgo.Record, error) {
	v, err := s.Encode(ctx, topic, o)
	if err != nil {
		return nil, fmt.Errorf("encode order %s: %w", o.OrderID, err)
	}
	m := event.New(Namespace+".OrderPlaced", source, o.OrderID)
	return &kgo.Record{Topic: topic, Key: []byte(o.OrderID), Value: v, Headers: m.Headers()}, nil
}
