package registry

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/kafka"
)

// FuzzHTTP sends arbitrary requests to a server that holds one subject
// (loaded straight into its state, without Kafka): it must never panic, and
// every answer must be JSON, errors in Confluent's format.
func FuzzHTTP(f *testing.F) {
	s, err := New(Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:1"}}}, zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	k, _ := json.Marshal(recordKey{Troupe: 1, Kind: kindSchema, Subject: "s", Version: 1, Proposal: "p"})
	v, _ := json.Marshal(schemaValue{Subject: "s", Version: 1, ID: 1, Schema: `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`})
	if err := s.st.apply(k, v, 0); err != nil {
		f.Fatal(err)
	}
	s.markReady(time.Now())

	methods := []string{"GET", "POST", "PUT", "DELETE"}
	f.Add(uint8(0), "/subjects/s/versions/latest", "")
	f.Add(uint8(1), "/subjects/s", `{"schema":"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}"}`)
	f.Add(uint8(1), "/compatibility/subjects/s/versions/1", `{"schema":"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"long\"}]}"}`)
	f.Add(uint8(1), "/compatibility/subjects/s/versions", `{"schema":"\"int\""}`)
	f.Add(uint8(0), "/schemas/ids/1/versions", "")
	f.Add(uint8(0), "/config/s?defaultToGlobal=false", "")
	f.Add(uint8(1), "/subjects/s/versions", `{"schema":"{}","references":[{}]}`)
	f.Add(uint8(1), "/subjects/t/versions", `{"schema":"{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"r\",\"type\":\"R\"}]}","references":[{"name":"R","subject":"s","version":1}]}`)
	f.Add(uint8(1), "/subjects/t", `{"schema":"\"int\"","metadata":{"properties":{"a":"b"}},"ruleSet":{}}`)
	f.Add(uint8(2), "/mode/s?force=true", `{"mode":"IMPORT"}`)
	f.Add(uint8(3), "/subjects/s/versions/1?permanent=true", "")
	f.Add(uint8(0), "/subjects/s/metadata?key=a&value=b&key=c", "")
	f.Add(uint8(0), "/schemas?subjectPrefix=s&latestOnly=true&offset=-3&limit=x", "")
	f.Add(uint8(0), "/contexts?contextPrefix=.&limit=0", "")
	f.Fuzz(func(t *testing.T, m uint8, path, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return // not a request a client could send
		}
		req := httptest.NewRequest(methods[int(m)%len(methods)], "http://registry"+path, strings.NewReader(body))
		// Writes need Kafka, which this server has none of: they must fail
		// cleanly (503), not hang.
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code >= 300 && w.Code < 400 {
			return // the mux redirects to the clean path (//x -> /x)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: %d %q is not JSON", req.Method, path, w.Code, w.Body.String())
		}
		if w.Code >= 400 {
			var e struct {
				Code    int    `json:"error_code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == 0 || e.Message == "" {
				t.Fatalf("%s %s: %d %q is not a Confluent error", req.Method, path, w.Code, w.Body.String())
			}
		}
	})
}
