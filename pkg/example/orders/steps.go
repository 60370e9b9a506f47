package orders

import (
	"fmt"
	"strings"
	"time"

	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/topology"
)

// The example's rules (README: The example saga).
const (
	// DeclineAboveCents: a payment above this amount is declined.
	DeclineAboveCents = 100_000
	// OutOfStockPrefix: a sku with this prefix is out of stock.
	OutOfStockPrefix = "OOS-"
	// SlowPrefix: a sku with this prefix makes inventory answer after SlowDelay.
	SlowPrefix = "SLOW-"
	// SlowDelay is how long inventory waits for a SLOW- sku: longer than the
	// saga's 30 s deadline, so such an order times out.
	SlowDelay = 60 * time.Second
	// UnshippableCountry cannot be shipped to.
	UnshippableCountry = "XX"
	// FailPrefix: a sku with this prefix makes the inventory handler fail
	// on every attempt (a warehouse system that is down), so the order's
	// PaymentAuthorized becomes a dead letter and the saga times out. It is
	// how to try `troupe dlq` on the example; the original example did not have it.
	FailPrefix = "ERR-"
)

// TopicOrders is where orders are placed, as topology/orders.yaml declares.
const TopicOrders = "orders"

// Topics are the topics the handlers emit to. The topology is their source:
// a copy of the saga with other topic names runs the same handlers.
type Topics struct {
	Payments, Inventory, Shipping string
}

// TopicsOf reads the handlers' topics from a topology: the topics that carry
// PaymentAuthorized, InventoryReserved and ShipmentScheduled.
func TopicsOf(t *topology.Topology) Topics {
	of := func(ev string) string {
		tp, _ := t.TopicOf(ev)
		return tp
	}
	return Topics{Payments: of("PaymentAuthorized"), Inventory: of("InventoryReserved"), Shipping: of("ShipmentScheduled")}
}

// Payment is the payment step's state for one order.
type Payment struct {
	PaymentID   string `json:"paymentId"`
	AmountCents int64  `json:"amountCents"`
	Refunded    bool   `json:"refunded"`
}

// Reservation is the inventory step's state for one order.
type Reservation struct {
	ReservationID string `json:"reservationId"`
	Released      bool   `json:"released"`
}

// Shipment is the shipping step's state for one order.
type Shipment struct {
	TrackingID string `json:"trackingId"`
}

// PaymentStep charges an order, or declines it above DeclineAboveCents, and
// refunds it on RefundPayment.
func PaymentStep(app string, out Topics, inputs ...string) *step.Step[Payment] {
	s := step.New[Payment](app, "payment", step.Inputs(inputs...))
	step.Handle(s, func(c *step.Context[Payment], o OrderPlaced) error {
		if o.AmountCents > DeclineAboveCents {
			return c.Emit(out.Payments, PaymentDeclined{OrderID: o.OrderID,
				Reason: fmt.Sprintf("amount %d exceeds the limit of %d", o.AmountCents, DeclineAboveCents)})
		}
		p := Payment{PaymentID: "pay-" + o.OrderID, AmountCents: o.AmountCents}
		c.SetState(p)
		return c.Emit(out.Payments, PaymentAuthorized{OrderID: o.OrderID, PaymentID: p.PaymentID,
			AmountCents: o.AmountCents, Items: o.Items, ShipTo: o.ShipTo})
	})
	step.Handle(s, func(c *step.Context[Payment], cmd RefundPayment) error {
		p, _ := c.State() // no state: nothing was charged, the refund is a no-op
		if p.PaymentID != "" && !p.Refunded {
			p.Refunded = true
			c.SetState(p)
		}
		return c.Emit(out.Payments, PaymentRefunded{OrderID: cmd.OrderID, PaymentID: p.PaymentID})
	})
	return s
}

// InventoryStep reserves an order's items, answers OutOfStock for an OOS-
// sku, waits SlowDelay (a durable timer) for a SLOW- sku, fails for an ERR-
// sku, and releases the reservation on ReleaseInventory.
func InventoryStep(app string, out Topics, inputs ...string) *step.Step[Reservation] {
	s := step.New[Reservation](app, "inventory", step.Inputs(inputs...))
	step.Handle(s, func(c *step.Context[Reservation], p PaymentAuthorized) error {
		slow := false
		for _, it := range p.Items {
			if strings.HasPrefix(it.SKU, FailPrefix) {
				return fmt.Errorf("reserve %s: warehouse system unavailable (an %s sku always fails)", it.SKU, FailPrefix)
			}
			if strings.HasPrefix(it.SKU, OutOfStockPrefix) {
				return c.Emit(out.Inventory, OutOfStock{OrderID: p.OrderID, SKU: it.SKU})
			}
			slow = slow || strings.HasPrefix(it.SKU, SlowPrefix)
		}
		r := Reservation{ReservationID: "res-" + p.OrderID}
		c.SetState(r)
		reserved := InventoryReserved{OrderID: p.OrderID, ReservationID: r.ReservationID, ShipTo: p.ShipTo}
		if slow {
			return c.After(SlowDelay, "slow-reserve", out.Inventory, reserved)
		}
		return c.Emit(out.Inventory, reserved)
	})
	step.Handle(s, func(c *step.Context[Reservation], cmd ReleaseInventory) error {
		r, _ := c.State()
		c.Cancel("slow-reserve")
		if r.ReservationID != "" && !r.Released {
			r.Released = true
			c.SetState(r)
		}
		return c.Emit(out.Inventory, InventoryReleased{OrderID: cmd.OrderID, ReservationID: r.ReservationID})
	})
	return s
}

// ShippingStep books a shipment, or fails for country XX.
func ShippingStep(app string, out Topics, inputs ...string) *step.Step[Shipment] {
	s := step.New[Shipment](app, "shipping", step.Inputs(inputs...))
	step.Handle(s, func(c *step.Context[Shipment], r InventoryReserved) error {
		if r.ShipTo.Country == UnshippableCountry {
			return c.Emit(out.Shipping, ShipmentFailed{OrderID: r.OrderID, Reason: "cannot ship to " + r.ShipTo.Country})
		}
		sh := Shipment{TrackingID: "trk-" + r.OrderID}
		c.SetState(sh)
		return c.Emit(out.Shipping, ShipmentScheduled{OrderID: r.OrderID, TrackingID: sh.TrackingID})
	})
	return s
}

// Steps returns the example's steps by name, with the inputs the topology
// gives each.
func Steps(t *topology.Topology) map[string]step.Definition {
	out := TopicsOf(t)
	return map[string]step.Definition{
		"payment":   PaymentStep(t.App, out, t.InputTopics("payment")...),
		"inventory": InventoryStep(t.App, out, t.InputTopics("inventory")...),
		"shipping":  ShippingStep(t.App, out, t.InputTopics("shipping")...),
	}
}
