package step_test

import (
	"fmt"
	"time"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/step/steptest"
)

// The events of a small shop, with their Avro schemas.
type OrderPlaced struct {
	OrderID string `avro:"orderId"`
	Cents   int64  `avro:"cents"`
}

type PaymentAuthorized struct {
	OrderID    string `avro:"orderId"`
	TotalCents int64  `avro:"totalCents"`
}

type PaymentReminder struct {
	OrderID string `avro:"orderId"`
}

const (
	orderPlacedSchema       = `{"type":"record","name":"OrderPlaced","namespace":"shop","fields":[{"name":"orderId","type":"string"},{"name":"cents","type":"long"}]}`
	paymentAuthorizedSchema = `{"type":"record","name":"PaymentAuthorized","namespace":"shop","fields":[{"name":"orderId","type":"string"},{"name":"totalCents","type":"long"}]}`
	paymentReminderSchema   = `{"type":"record","name":"PaymentReminder","namespace":"shop","fields":[{"name":"orderId","type":"string"}]}`
)

// Payment is the payment step's state for one order.
type Payment struct {
	TotalCents int64 `json:"totalCents"`
}

// A payment step: it adds up what each order was charged (per-instance
// state), answers each OrderPlaced with a PaymentAuthorized, and sets a
// durable timer that sends a reminder unless a later event cancels it.
//
// Here it runs on an in-process Kafka (steptest); in production the same
// step runs with step.Run, or as `troupe run`.
func Example() {
	s := step.New[Payment]("shop", "payment", step.Inputs("orders"))
	step.Handle(s, func(c *step.Context[Payment], o OrderPlaced) error {
		p, _ := c.State()
		p.TotalCents += o.Cents
		c.SetState(p)
		if err := c.After(100*time.Millisecond, "remind", "reminders", PaymentReminder{OrderID: o.OrderID}); err != nil {
			return err
		}
		return c.Emit("payments", PaymentAuthorized{OrderID: o.OrderID, TotalCents: p.TotalCents})
	})

	serde := avro.NewSerde(steptest.NewRegistry())
	for zero, schema := range map[any]string{OrderPlaced{}: orderPlacedSchema, PaymentAuthorized{}: paymentAuthorizedSchema, PaymentReminder{}: paymentReminderSchema} {
		if err := serde.Register(zero, schema); err != nil {
			fmt.Println(err)
			return
		}
	}
	d, err := steptest.Start(s, serde, steptest.Topics("payments", "reminders"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	_, _ = d.Send("orders", "o-1", OrderPlaced{OrderID: "o-1", Cents: 500})
	_, _ = d.Send("orders", "o-1", OrderPlaced{OrderID: "o-1", Cents: 250})
	for range 2 {
		out, err := d.Next("payments")
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s %+v caused by %s\n", out.Meta.Type, out.Value, out.Meta.Source)
	}
	// The second OrderPlaced replaced the timer the first one set: one
	// reminder.
	reminder, err := d.Next("reminders")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %+v\n", reminder.Meta.Type, reminder.Value)

	p, _, _ := steptest.State[Payment](d, "o-1")
	fmt.Printf("state of o-1: %+v\n", p)
	// Output:
	// shop.PaymentAuthorized {OrderID:o-1 TotalCents:500} caused by shop.payment
	// shop.PaymentAuthorized {OrderID:o-1 TotalCents:750} caused by shop.payment
	// shop.PaymentReminder {OrderID:o-1}
	// state of o-1: {TotalCents:750}
}
