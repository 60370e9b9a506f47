// Package orders holds the Go types of the example saga's events
// (order-fulfillment, README: The example saga), written by hand to match the Avro schemas
// in schemas/*.avsc (namespace troupe.example.orders). A test checks every
// type against its schema, both ways.
//
// Register them with a Serde once per process:
//
//	s := avro.NewSerde(reg)
//	if err := orders.Register(s); err != nil { ... }
package orders

import (
	"fmt"
	"reflect"
	"time"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/schemas"
)

// Namespace is the Avro namespace of the example's events.
const Namespace = "troupe.example.orders"

// LineItem is one line of an order.
type LineItem struct {
	SKU      string `avro:"sku" json:"sku"`
	Quantity int32  `avro:"quantity" json:"quantity"`
}

// Address is where an order ships to. Country is ISO 3166-1 alpha-2.
type Address struct {
	Name    string `avro:"name" json:"name"`
	Line1   string `avro:"line1" json:"line1"`
	City    string `avro:"city" json:"city"`
	Country string `avro:"country" json:"country"`
}

// OrderPlaced starts the saga (topic orders). OrderID is the saga id and key.
type OrderPlaced struct {
	OrderID     string     `avro:"orderId" json:"orderId"`
	CustomerID  string     `avro:"customerId" json:"customerId"`
	AmountCents int64      `avro:"amountCents" json:"amountCents"`
	Currency    string     `avro:"currency" json:"currency"`
	Items       []LineItem `avro:"items" json:"items"`
	ShipTo      Address    `avro:"shipTo" json:"shipTo"`
	PlacedAt    time.Time  `avro:"placedAt" json:"placedAt"`
}

// PaymentAuthorized: the payment step charged the order. It carries the
// items and address on, for the inventory and shipping steps.
type PaymentAuthorized struct {
	OrderID     string     `avro:"orderId" json:"orderId"`
	PaymentID   string     `avro:"paymentId" json:"paymentId"`
	AmountCents int64      `avro:"amountCents" json:"amountCents"`
	Items       []LineItem `avro:"items" json:"items"`
	ShipTo      Address    `avro:"shipTo" json:"shipTo"`
}

// PaymentDeclined: the payment step refused the order; fails the saga.
type PaymentDeclined struct {
	OrderID string `avro:"orderId" json:"orderId"`
	Reason  string `avro:"reason" json:"reason"`
}

// RefundPayment is the coordinator's command to undo the payment step.
type RefundPayment struct {
	OrderID string `avro:"orderId" json:"orderId"`
	Reason  string `avro:"reason" json:"reason"`
}

// PaymentRefunded: the payment step was undone. PaymentID is empty when
// there was nothing to refund (a null compensation).
type PaymentRefunded struct {
	OrderID   string `avro:"orderId" json:"orderId"`
	PaymentID string `avro:"paymentId" json:"paymentId"`
}

// InventoryReserved: every item is reserved. Carries the address on, for
// the shipping step.
type InventoryReserved struct {
	OrderID       string  `avro:"orderId" json:"orderId"`
	ReservationID string  `avro:"reservationId" json:"reservationId"`
	ShipTo        Address `avro:"shipTo" json:"shipTo"`
}

// OutOfStock: an item could not be reserved; fails the saga.
type OutOfStock struct {
	OrderID string `avro:"orderId" json:"orderId"`
	SKU     string `avro:"sku" json:"sku"`
}

// ReleaseInventory is the coordinator's command to undo the inventory step.
type ReleaseInventory struct {
	OrderID string `avro:"orderId" json:"orderId"`
	Reason  string `avro:"reason" json:"reason"`
}

// InventoryReleased: the inventory step was undone.
type InventoryReleased struct {
	OrderID       string `avro:"orderId" json:"orderId"`
	ReservationID string `avro:"reservationId" json:"reservationId"`
}

// ShipmentScheduled: the shipment is booked; completes the saga.
type ShipmentScheduled struct {
	OrderID    string `avro:"orderId" json:"orderId"`
	TrackingID string `avro:"trackingId" json:"trackingId"`
}

// ShipmentFailed: the order cannot ship; fails the saga.
type ShipmentFailed struct {
	OrderID string `avro:"orderId" json:"orderId"`
	Reason  string `avro:"reason" json:"reason"`
}

// Types maps the Avro full name of every event to a zero value of its Go
// type.
func Types() map[string]any {
	return map[string]any{
		Namespace + ".OrderPlaced":       OrderPlaced{},
		Namespace + ".PaymentAuthorized": PaymentAuthorized{},
		Namespace + ".PaymentDeclined":   PaymentDeclined{},
		Namespace + ".RefundPayment":     RefundPayment{},
		Namespace + ".PaymentRefunded":   PaymentRefunded{},
		Namespace + ".InventoryReserved": InventoryReserved{},
		Namespace + ".OutOfStock":        OutOfStock{},
		Namespace + ".ReleaseInventory":  ReleaseInventory{},
		Namespace + ".InventoryReleased": InventoryReleased{},
		Namespace + ".ShipmentScheduled": ShipmentScheduled{},
		Namespace + ".ShipmentFailed":    ShipmentFailed{},
		saga.EndedType:                   saga.Ended{},
	}
}

// Register registers every event type with s, with its schema from
// schemas/*.avsc. It fails if a type has no schema file or a schema file has
// no type, so the two cannot drift apart.
func Register(s *avro.Serde) error {
	files, err := schemas.All()
	if err != nil {
		return fmt.Errorf("read embedded schemas: %w", err)
	}
	types := Types()
	for _, f := range files {
		zero, ok := types[f.FullName]
		if !ok {
			return fmt.Errorf("schema %s (%s) has no Go type in package orders", f.FullName, f.Path)
		}
		if err := s.Register(zero, f.Text); err != nil {
			return err
		}
		delete(types, f.FullName)
	}
	for name, zero := range types {
		return fmt.Errorf("Go type %s has no schema %s in schemas/", reflect.TypeOf(zero), name)
	}
	return nil
}
