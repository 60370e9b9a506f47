package runner

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
)

// Record is the answer of GET /api/records/{topic}/{partition}/{offset}:
// one record, its value decoded from Avro to JSON with its writer schema
// from the registry, as `troupe tail` prints it.
type Record struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
	// Key is the record key; keys that are not UTF-8 are "base64:...".
	Key      *string         `json:"key"`
	Type     string          `json:"type,omitempty"`
	SchemaID *int            `json:"schemaId,omitempty"`
	Headers  []Header        `json:"headers"`
	Value    json.RawMessage `json:"value,omitempty"`
	// Error says why the value is not decoded; RawValue is then its bytes.
	Error    string `json:"error,omitempty"`
	RawValue []byte `json:"rawValueBase64,omitempty"`
}

// Header is one record header, in the record's order.
type Header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// MountRecords serves GET /api/records/{topic}/{partition}/{offset} on srv
// for the topics of t (its business topics, the steps' and the
// coordinator's DLQs and retry topics, and the saga's ended topic),
// reading through kcfg and decoding with serde's registry.
func MountRecords(srv *api.Server, kcfg kafka.Config, t *topology.Topology, serde *avro.Serde) {
	topics := []string{t.EndedTopic()}
	for _, tp := range t.Topics {
		topics = append(topics, tp.Name)
	}
	for _, name := range append(t.StepNames(), saga.StepName(t)) {
		topics = append(topics, t.DLQ(name), t.RetryTopic(name))
	}
	srv.Handle("GET /api/records/{topic}/{partition}/{offset}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		topic := r.PathValue("topic")
		p, perr := strconv.ParseInt(r.PathValue("partition"), 10, 32)
		off, oerr := strconv.ParseInt(r.PathValue("offset"), 10, 64)
		switch {
		case !slices.Contains(topics, topic):
			api.WriteError(w, http.StatusNotFound, "topic %q is not one of saga %s's (its topics, DLQs, retry topics and %s)", topic, t.Saga, t.EndedTopic())
			return
		case perr != nil || p < 0 || oerr != nil || off < 0:
			api.WriteError(w, http.StatusBadRequest, "partition and offset must be numbers of 0 or more: /api/records/%s/PARTITION/OFFSET", topic)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		rec, err := ReadRecord(ctx, kcfg, topic, int32(p), off)
		var nf *RecordNotFoundError
		switch {
		case errors.As(err, &nf):
			api.WriteError(w, http.StatusNotFound, "%v", err)
			return
		case err != nil:
			api.WriteError(w, http.StatusBadGateway, "read %s/%d@%d: %v", topic, p, off, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, DecodeRecord(ctx, serde, rec))
	}))
}

// RecordNotFoundError says that an offset holds no record a
// read_committed reader sees, and what the partition holds.
type RecordNotFoundError struct {
	Topic     string
	Partition int32
	Offset    int64
	Span      replay.Span // what the partition holds; zero if it does not exist
	Exists    bool
}

func (e *RecordNotFoundError) Error() string {
	switch {
	case !e.Exists:
		return "topic " + e.Topic + " has no partition " + strconv.Itoa(int(e.Partition))
	case e.Offset < e.Span.Start || e.Offset >= e.Span.End:
		return "offset " + strconv.FormatInt(e.Offset, 10) + " is not in " + e.Topic + " " + e.Span.String() + " (deleted by retention, or not written yet)"
	}
	return "offset " + strconv.FormatInt(e.Offset, 10) + " of " + e.Topic + " partition " + strconv.Itoa(int(e.Partition)) + " is a transaction marker or an aborted write, not a record"
}

// ReadRecord reads the record at offset of topic's partition,
// read_committed.
func ReadRecord(ctx context.Context, kcfg kafka.Config, topic string, partition int32, offset int64) (*kgo.Record, error) {
	cl, err := kafka.NewClient(ctx, kcfg)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	spans, err := replay.Spans(ctx, kadm.NewClient(cl), topic, replay.FromOffset(0))
	if err != nil {
		return nil, err
	}
	nf := &RecordNotFoundError{Topic: topic, Partition: partition, Offset: offset}
	if int(partition) >= len(spans) {
		return nil, nf
	}
	nf.Exists, nf.Span = true, spans[partition]
	if offset < nf.Span.Start || offset >= nf.Span.End {
		return nil, nf
	}
	var rec *kgo.Record
	err = replay.Scan(ctx, kcfg, topic, []replay.Span{{Partition: partition, Start: offset, End: offset + 1}}, func(r *kgo.Record) error {
		rec = r
		return nil
	})
	if err == nil && rec == nil {
		return nil, nf
	}
	return rec, err
}

// DecodeRecord decodes r's value with serde, as `troupe tail` does: a value
// that cannot be decoded keeps its bytes and says why.
func DecodeRecord(ctx context.Context, serde *avro.Serde, r *kgo.Record) Record {
	out := Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp, Headers: []Header{}}
	if r.Key != nil {
		k := string(r.Key)
		if !utf8.Valid(r.Key) {
			k = "base64:" + base64.StdEncoding.EncodeToString(r.Key)
		}
		out.Key = &k
	}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, Header{Key: h.Key, Value: string(h.Value)})
	}
	if r.Value == nil {
		out.Error = "no value (null): a marker, or a tombstone"
		return out
	}
	if id, _, err := avro.SplitHeader(r.Value); err == nil {
		out.SchemaID = &id
	}
	name, doc, err := serde.DecodeJSON(ctx, r.Value)
	if err != nil {
		out.Error, out.RawValue = err.Error(), r.Value
		out.Type, _ = event.Header(r, event.HeaderType)
		return out
	}
	out.Type, out.Value = name, doc
	return out
}
