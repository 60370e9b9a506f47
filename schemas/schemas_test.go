package schemas_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/troupehq/troupe/schemas"
)

// Every event carries the saga key as its first field: orderId for the
// example's events, sagaId for the coordinator's SagaEnded.
func TestEveryEventCarriesTheKey(t *testing.T) {
	files, err := schemas.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 12 {
		t.Errorf("%d schemas, want 12", len(files))
	}
	for _, f := range files {
		var rec struct {
			Namespace string
			Fields    []struct{ Name, Type any }
		}
		if err := json.Unmarshal([]byte(f.Text), &rec); err != nil {
			t.Fatal(err)
		}
		key, ns := "orderId", "troupe.example.orders"
		if f.FullName == "troupe.saga.SagaEnded" {
			key, ns = "sagaId", "troupe.saga"
		}
		if rec.Namespace != ns || !strings.HasPrefix(f.FullName, ns+".") {
			t.Errorf("%s: namespace %q, want %q", f.Path, rec.Namespace, ns)
		}
		if len(rec.Fields) == 0 || rec.Fields[0].Name != key || rec.Fields[0].Type != "string" {
			t.Errorf("%s: first field is not %s (string)", f.Path, key)
		}
	}
}
