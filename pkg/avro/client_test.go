package avro_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/troupehq/troupe/pkg/avro"
)

const (
	v1 = `{"type":"record","name":"A","namespace":"c","fields":[{"name":"id","type":"string"}]}`
	v2 = `{"type":"record","name":"A","namespace":"c","fields":[{"name":"id","type":"string"},{"name":"n","type":"int","default":0}]}`
)

// TestRegistryClient runs the client against franz-go's fake registry (which
// does not check compatibility; pkg/registry's tests do, against the real
// built-in server).
func TestRegistryClient(t *testing.T) {
	ctx := context.Background()
	fake := srfake.New()
	defer fake.Close()
	c, err := avro.NewRegistryClient(fake.URL())
	if err != nil {
		t.Fatal(err)
	}
	subject := avro.Subject("t", "c.A")
	if subject != "t-c.A" {
		t.Fatalf("subject = %s", subject)
	}

	if _, err := c.Lookup(ctx, subject, v1); !errors.Is(err, avro.ErrUnknownSchema) {
		t.Fatalf("lookup before register: %v", err)
	}
	if _, _, err := c.Latest(ctx, subject); !errors.Is(err, avro.ErrUnknownSchema) {
		t.Fatalf("latest before register: %v", err)
	}
	if _, err := c.SchemaByID(ctx, 99); !errors.Is(err, avro.ErrUnknownSchema) {
		t.Fatalf("unknown id: %v", err)
	}
	if res, err := c.Check(ctx, subject, v1); err != nil || !res.Compatible {
		t.Fatalf("check of a new subject = %+v, %v", res, err)
	}

	id1, err := c.Register(ctx, subject, v1)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Register(ctx, subject, v1); err != nil || again != id1 {
		t.Fatalf("registering again = %d, %v; want %d", again, err, id1)
	}
	if id, err := c.Lookup(ctx, subject, v1); err != nil || id != id1 {
		t.Fatalf("lookup = %d, %v", id, err)
	}
	if text, err := c.SchemaByID(ctx, id1); err != nil || text != v1 {
		t.Fatalf("by id = %q, %v", text, err)
	}
	if res, err := c.Check(ctx, subject, v2); err != nil || !res.Compatible {
		t.Fatalf("check v2 = %+v, %v", res, err)
	}
	id2, err := c.Register(ctx, subject, v2)
	if err != nil {
		t.Fatal(err)
	}
	if id, text, err := c.Latest(ctx, subject); err != nil || id != id2 || text != v2 {
		t.Fatalf("latest = %d %q %v", id, text, err)
	}
	subjects, err := c.Subjects(ctx)
	if err != nil || len(subjects) != 1 || subjects[0] != subject {
		t.Fatalf("subjects = %v, %v", subjects, err)
	}
}

func TestRegistryUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now

	c, err := avro.NewRegistryClient(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SchemaByID(context.Background(), 1)
	if !errors.Is(err, avro.ErrRegistryUnavailable) {
		t.Fatalf("err = %v, want ErrRegistryUnavailable", err)
	}
	for _, want := range []string{url, "TROUPE_REGISTRY_URL", "--registry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// Through a Serde: not a DecodeError, since a retry may work.
	s := avro.NewSerde(c)
	_, _, err = s.Decode(context.Background(), []byte{0, 0, 0, 0, 1, 0})
	var de *avro.DecodeError
	if !errors.Is(err, avro.ErrRegistryUnavailable) || errors.As(err, &de) {
		t.Fatalf("decode err = %v", err)
	}
	if _, err := avro.NewRegistryClient(""); err == nil || !strings.Contains(err.Error(), "TROUPE_REGISTRY_URL") {
		t.Fatalf("empty URL: %v", err)
	}
}
