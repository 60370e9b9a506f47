package suggest

import "testing"

func TestDidYouMean(t *testing.T) {
	names := []string{"payment", "inventory", "shipping", "saga.order-fulfillment"}
	for typed, want := range map[string]string{
		"paymnet":   " (did you mean payment?)",
		"Payment":   " (did you mean payment?)",
		"inv":       " (did you mean inventory?)",
		"inventroy": " (did you mean inventory?)",
		"billing":   "",
		"payment":   "",
	} {
		if got := DidYouMean(typed, names); got != want {
			t.Errorf("DidYouMean(%q) = %q, want %q", typed, got, want)
		}
	}
	if got := DidYouMean("OrderPlacd", []string{"OrderPlaced", "OutOfStock"}); got != " (did you mean OrderPlaced?)" {
		t.Errorf("OrderPlacd: %q", got)
	}
}
