package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/troupehq/troupe/integration/kafkaharness"
)

// TestInteropPythonAndKcat proves troupe speaks what the Kafka ecosystem
// speaks, with clients nobody here wrote, against the real broker and the
// built-in registry (DESIGN §3, §6):
//
//   - Python's confluent-kafka Producer with AvroSerializer and
//     SchemaRegistryClient produces an OrderPlaced; `troupe tail` decodes it.
//   - `troupe produce` writes one; Python's AvroDeserializer reads it back
//     field for field.
//   - kcat reads both raw values: magic byte 0, then the registered id.
//
// The test set-up installs confluent-kafka from PyPI into a virtualenv
// outside the repository (once, cached). Without python3 or PyPI, or
// without kcat, the affected part is skipped, or fails when CI=true.
func TestInteropPythonAndKcat(t *testing.T) {
	py := pythonWithConfluentKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	brokers := strings.Join(kafkaharness.Brokers(), ",")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	topic := topicName(t, "orders")
	createTopic(t, ctx, adm, topic, 3, 1, nil)

	// The built-in registry, as its own process, on a schemas topic of this
	// test's own.
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	startTroupe(t, "registry", "registry", "--port", port, "--topic", topicName(t, "schemas"))
	url := "http://" + addr
	eventually(t, 60*time.Second, "registry answers", func() (bool, string) {
		resp, err := http.Get(url + "/subjects")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})

	out, err := runTroupe(t, ctx, "schemas", "register", "--dir", "../schemas", "--topic", topic, "--registry", url)
	if err != nil {
		t.Fatalf("schemas register: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`OrderPlaced: registered version 1, id (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no id for OrderPlaced in:\n%s", out)
	}
	id, _ := strconv.Atoi(m[1])
	schemaFile, _ := filepath.Abs("../schemas/OrderPlaced.avsc")

	// Python produces; troupe tail decodes.
	fromPython := map[string]any{
		"orderId": "o-py", "customerId": "c-py", "amountCents": float64(4200), "currency": "EUR",
		"items":    []any{map[string]any{"sku": "PY-1", "quantity": float64(3)}},
		"shipTo":   map[string]any{"name": "Guido", "line1": "1 Main St", "city": "Amsterdam", "country": "NL"},
		"placedAt": float64(1714564800123),
	}
	doc, _ := json.Marshal(fromPython)
	pyOut := runPython(t, ctx, py, "produce", brokers, url, topic, schemaFile, string(doc))
	var where struct{ Partition, Offset int }
	if err := json.Unmarshal([]byte(lastLine(pyOut)), &where); err != nil {
		t.Fatalf("python produce said %q: %v", pyOut, err)
	}
	out, err = runTroupe(t, ctx, "tail", "--topic", topic, "--registry", url)
	if err != nil {
		t.Fatalf("tail: %v\n%s", err, out)
	}
	var line struct {
		Key      string
		Type     string
		SchemaID int
		Headers  map[string]string
		Value    map[string]any
		Error    string
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &line); err != nil {
		t.Fatalf("tail printed %q: %v", out, err)
	}
	fromPython["placedAt"] = "2024-05-01T12:00:00.123Z" // tail shows timestamps as RFC 3339
	if line.Error != "" || line.Key != "o-py" || line.Type != "troupe.example.orders.OrderPlaced" || line.SchemaID != id ||
		line.Headers["ce_source"] != "python" || !reflect.DeepEqual(line.Value, fromPython) {
		t.Fatalf("troupe tail of Python's record:\n got %+v\nwant value %v, schema id %d", line, fromPython, id)
	}
	checkRawValue(t, ctx, brokers, topic, where.Partition, where.Offset, id)

	// troupe produces; Python decodes.
	fromTroupe := `{"orderId":"o-go","customerId":"c-go","amountCents":12999,"currency":"USD",
		"items":[{"sku":"GO-1","quantity":1},{"sku":"GO-2","quantity":2}],
		"shipTo":{"name":"Rob","line1":"2 Side St","city":"Sydney","country":"AU"},
		"placedAt":"2024-05-01T12:00:00.5Z"}`
	out, err = runTroupe(t, ctx, "produce", "--topic", topic, "--type", "troupe.example.orders.OrderPlaced", "--key", "o-go", "--data", fromTroupe, "--registry", url)
	if err != nil {
		t.Fatalf("produce: %v\n%s", err, out)
	}
	m = regexp.MustCompile(`partition (\d+) offset (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("produce printed %q", out)
	}
	partition, _ := strconv.Atoi(m[1])
	offset, _ := strconv.Atoi(m[2])
	pyOut = runPython(t, ctx, py, "consume", brokers, url, topic, "o-go")
	var got struct {
		Value   map[string]any
		Headers map[string]string
	}
	if err := json.Unmarshal([]byte(lastLine(pyOut)), &got); err != nil {
		t.Fatalf("python consume said %q: %v", pyOut, err)
	}
	var want map[string]any
	_ = json.Unmarshal([]byte(fromTroupe), &want)
	want["placedAt"] = float64(1714564800500) // Python prints epoch millis
	if !reflect.DeepEqual(got.Value, want) {
		t.Fatalf("Python's AvroDeserializer read:\n %v\nwant\n %v", got.Value, want)
	}
	if got.Headers["ce_source"] != "troupe-cli" || got.Headers["ce_type"] != "troupe.example.orders.OrderPlaced" || got.Headers["ce_id"] == "" {
		t.Fatalf("headers Python saw: %v", got.Headers)
	}
	checkRawValue(t, ctx, brokers, topic, partition, offset, id)
}

// confluentKafkaVersion is pinned: 2.16.x needs a certifi newer than PyPI
// mirrors may have.
const confluentKafkaVersion = "2.15.0"

// pythonWithConfluentKafka returns the python of a virtualenv (outside the
// repository, under the user cache directory) with confluent-kafka and its
// Avro and schema registry extras, installing them from PyPI the first time.
func pythonWithConfluentKafka(t *testing.T) string {
	t.Helper()
	base, err := exec.LookPath("python3")
	if err != nil {
		skipOrFail(t, "python3 is not installed: cannot run the Python interop test")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "troupe", "py-confluent-kafka-"+confluentKafkaVersion)
	py := filepath.Join(dir, "bin", "python")
	marker := filepath.Join(dir, ".installed")
	if _, err := os.Stat(marker); err == nil {
		return py
	}
	_ = os.RemoveAll(dir)
	for _, args := range [][]string{
		{base, "-m", "venv", dir},
		{py, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "confluent-kafka[avro,schemaregistry]==" + confluentKafkaVersion},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			skipOrFail(t, "cannot install confluent-kafka "+confluentKafkaVersion+" from PyPI into "+dir+": "+err.Error()+"\n"+string(out))
		}
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return py
}

const interopPy = `
import datetime, json, sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

mode, brokers, registry, topic = sys.argv[1:5]
sr = SchemaRegistryClient({"url": registry})
ctx = SerializationContext(topic, MessageField.VALUE)
if mode == "produce":
    schema = open(sys.argv[5]).read()
    ser = AvroSerializer(sr, schema, conf={
        "subject.name.strategy": topic_record_subject_name_strategy,  # <topic>-<full name>, as troupe
        "auto.register.schemas": False,
    })
    order = json.loads(sys.argv[6])
    order["placedAt"] = datetime.datetime.fromtimestamp(order["placedAt"] / 1000, tz=datetime.timezone.utc)
    done = {}
    p = Producer({"bootstrap.servers": brokers})
    p.produce(topic, key=order["orderId"], value=ser(order, ctx),
              headers=[("ce_specversion", "1.0"), ("ce_id", "py-1"), ("ce_source", "python"),
                       ("ce_type", "troupe.example.orders.OrderPlaced"), ("content-type", "application/avro")],
              on_delivery=lambda err, msg: done.update(err=err, partition=msg.partition(), offset=msg.offset()))
    p.flush(30)
    if done.get("err") is not None or "offset" not in done:
        sys.exit("produce failed: %s" % done.get("err"))
    print(json.dumps({"partition": done["partition"], "offset": done["offset"]}))
else:
    key = sys.argv[5]
    de = AvroDeserializer(sr)
    c = Consumer({"bootstrap.servers": brokers, "group.id": "interop-" + topic,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.subscribe([topic])
    deadline = time.time() + 60
    while time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            sys.exit(str(m.error()))
        if m.key().decode() != key:
            continue
        v = de(m.value(), ctx)
        v["placedAt"] = int(v["placedAt"].timestamp() * 1000)
        print(json.dumps({"value": v, "headers": {k: val.decode() for k, val in (m.headers() or [])}}))
        c.close()
        sys.exit(0)
    sys.exit("no record with key %s in %s" % (key, topic))
`

func runPython(t *testing.T, ctx context.Context, py string, args ...string) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "interop.py")
	if err := os.WriteFile(script, []byte(interopPy), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, py, append([]string{script}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("python %s: %v\n%s%s", args[0], err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// checkRawValue reads one record's value with kcat and checks the Confluent
// framing: magic byte 0, then the schema id, big-endian.
func checkRawValue(t *testing.T, ctx context.Context, brokers, topic string, partition, offset, id int) {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		skipOrFail(t, "kcat is not installed (apt-get install kcat): raw value check skipped")
		return
	}
	out, err := exec.CommandContext(ctx, kcat, "-b", brokers, "-C", "-t", topic, "-p", strconv.Itoa(partition),
		"-o", strconv.Itoa(offset), "-c", "1", "-e", "-q", "-f", "%s").Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("kcat: %v\n%s", err, ee.Stderr)
	} else if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	if len(out) < 6 || out[0] != 0 || int(binary.BigEndian.Uint32(out[1:5])) != id {
		t.Fatalf("raw value of %s/%d@%d: % x; want 00, then schema id %d as 4 bytes big-endian", topic, partition, offset, out[:min(len(out), 16)], id)
	}
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if ci := os.Getenv("CI"); ci == "true" || ci == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
