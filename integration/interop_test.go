package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
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
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
)

// TestInteropPythonAndKcat proves troupe speaks what the Kafka ecosystem
// speaks, with clients nobody here wrote, against the real broker and the
// built-in registry (README: Concepts, Schemas):
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

// pythonRequirements pins what the Python tests install (2.16.x needs a
// certifi newer than PyPI mirrors may have); .ci/deps installs the same
// into the same virtualenv.
const pythonRequirements = "../.ci/python-requirements.txt"

// pythonWithConfluentKafka returns the python of a virtualenv (outside the
// repository, under the user cache directory) with confluent-kafka and its
// Avro and schema registry extras, installing them from PyPI the first time
// (.ci/deps does it ahead, and under CI fails when it cannot).
func pythonWithConfluentKafka(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(pythonRequirements)
	if err != nil {
		t.Fatal(err)
	}
	req := strings.TrimSpace(string(b))
	_, confluentKafkaVersion, ok := strings.Cut(req, "==")
	if !ok || strings.ContainsAny(req, "\n ") {
		t.Fatalf("%s holds %q; want one pinned requirement, confluent-kafka[...]==VERSION", pythonRequirements, req)
	}
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
		{py, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", pythonRequirements},
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

// TestInteropPythonSaga runs schemas/README.md's Python recipe as written
// (confluent-kafka's Producer, librdkafka underneath, with the documented
// partitioner and headers, and AvroSerializer) against the example saga
// deployed as `troupe run` processes, with the schemas registered as the
// README says (`troupe schemas register --topology`), and follows the order
// to COMPLETED in the coordinator: once as documented, once with a
// zone-less ce_time (what Python's utcnow().isoformat() writes), once with
// no headers at all (type from the schema, id derived), and, with kcat,
// once through the README's kcat command. Each order must land in the
// partition troupe's murmur2 gives its key, or its saga would split.
func TestInteropPythonSaga(t *testing.T) {
	py := pythonWithConfluentKafka(t)
	e := newSagaEnv(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := runTroupe(t, ctx, "schemas", "register", "--dir", "../schemas", "--topology", e.file, "--registry", e.registry)
	if err != nil || strings.Count(out, ": registered version 1") != 12 {
		t.Fatalf("schemas register --topology: %v\n%s", err, out)
	}
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	coord := e.startStep("coordinator", "1")
	trigger, _ := e.topo.TopicOf(e.topo.Trigger)

	recipe := readmeBlock(t, "../schemas/README.md", "From Python (", "```python\n")
	const conf = `BROKERS, REGISTRY, TOPIC = "127.0.0.1:9092", "http://127.0.0.1:8081", "orders"`
	recipe = replaceOnce(t, recipe, conf, fmt.Sprintf("BROKERS, REGISTRY, TOPIC = %q, %q, %q", e.brokerList(), e.registry, trigger))
	const zoned = `datetime.datetime.now(datetime.timezone.utc).isoformat()`
	zoneless := replaceOnce(t, replaceOnce(t, recipe, `"o-1001"`, `"o-1002"`), zoned, `datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()`)
	// No CloudEvents headers at all: the type comes from the schema, the id
	// is derived from the record's place.
	bare := replaceOnce(t, recipe, `"o-1001"`, `"o-1004"`)
	bare = regexp.MustCompile(`headers=\[[^\]]*\],`).ReplaceAllString(bare, "")
	if strings.Contains(bare, "ce_id") {
		t.Fatalf("the recipe's headers were not removed:\n%s", bare)
	}

	murmur2 := func(key string) int32 {
		return int32(kgo.StickyKeyPartitioner(nil).ForTopic(trigger).Partition(&kgo.Record{Key: []byte(key)}, int(e.topo.Partitions)))
	}
	// librdkafka's default partitioner (CRC32), for an order it places in
	// another partition than murmur2: the coordinator moves it, and the
	// saga still completes.
	crcID := ""
	for i := 1005; crcID == ""; i++ {
		if id := fmt.Sprintf("o-%d", i); int32(crc32.ChecksumIEEE([]byte(id))%uint32(e.topo.Partitions)) != murmur2(id) {
			crcID = id
		}
	}
	crc := replaceOnce(t, replaceOnce(t, recipe, `"o-1001"`, `"`+crcID+`"`), `, "partitioner": "murmur2_random"`, "")
	for id, script := range map[string]string{"o-1001": recipe, "o-1002": zoneless, "o-1004": bare, crcID: crc} {
		out := runPythonScript(t, ctx, py, script)
		m := regexp.MustCompile(`partition (\d+) offset (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the recipe for %s printed %q, want its partition and offset", id, out)
		}
		p, _ := strconv.Atoi(m[1])
		if want := murmur2(id); (int32(p) != want) != (id == crcID) {
			t.Fatalf("the recipe put %s in partition %d; troupe's steps use %d (murmur2)", id, p, want)
		}
		off, _ := strconv.ParseInt(m[2], 10, 64)
		ceTime := header(t, ctx, e, trigger, int32(p), off, "ce_time")
		zoneLess := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?$`).MatchString(ceTime)
		if zoneLess != (id == "o-1002") || (ceTime == "") != (id == "o-1004") {
			t.Fatalf("order %s went with ce_time %q", id, ceTime)
		}
	}
	ids := []string{"o-1001", "o-1002", "o-1004", crcID}

	// kcat, with the README's flags; the framed value made here (the
	// README makes it with avro-tools).
	if kcat, err := exec.LookPath("kcat"); err != nil {
		skipOrFailPart(t, "kcat is not installed (apt-get install kcat): the kcat recipe is not run")
	} else {
		order := orders.NewOrder("o-1003", orders.OutcomeCompleted, time.Now())
		value, err := e.serde.Encode(ctx, trigger, order)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "order.bin")
		if err := os.WriteFile(bin, value, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := readmeBlock(t, "../schemas/README.md", "With kcat,", "```sh\n")
		line := cmd[strings.Index(cmd, "kcat -P"):]
		line = strings.ReplaceAll(line, "\\\n", " ")
		line = replaceOnce(t, line, "-b 127.0.0.1:9092 -t orders -k o-1001", "-b "+e.brokerList()+" -t "+trigger+" -k o-1003")
		line = replaceOnce(t, line, " order.bin", " "+bin)
		line = strings.Replace(line, "kcat ", kcat+" ", 1)
		if out, err := exec.CommandContext(ctx, "bash", "-c", line).CombinedOutput(); err != nil {
			t.Fatalf("kcat: %v\n%s\n%s", err, line, out)
		}
		ids = append(ids, "o-1003")
		eventually(t, 30*time.Second, "kcat's order in troupe's partition", func() (bool, string) {
			p, ok := partitionOf(t, ctx, e, trigger, "o-1003")
			return ok && p == murmur2("o-1003"), fmt.Sprintf("partition %d (found %v), want %d", p, ok, murmur2("o-1003"))
		})
	}

	for _, id := range ids {
		eventually(t, 90*time.Second, "saga "+id+" COMPLETED", func() (bool, string) {
			e.alive()
			out, err := runTroupe(t, ctx, "saga", "get", id, "--api", coord.http)
			if err != nil {
				return false, out
			}
			var inst struct {
				Status    string
				Completed []string
			}
			if err := json.Unmarshal([]byte(out), &inst); err != nil {
				return false, out
			}
			return inst.Status == "COMPLETED" && reflect.DeepEqual(inst.Completed, []string{"payment", "inventory", "shipping"}), out
		})
	}
}

// readmeBlock returns the first fenced block (opening with fence) after
// the text after in a Markdown file.
func readmeBlock(t *testing.T, file, after, fence string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, after)
	if i < 0 {
		t.Fatalf("%s has no %q", file, after)
	}
	s = s[i:]
	j := strings.Index(s, fence)
	if j < 0 {
		t.Fatalf("%s has no %q block after %q", file, fence, after)
	}
	s = s[j+len(fence):]
	return s[:strings.Index(s, "```")]
}

// replaceOnce replaces old, which must be in s exactly once: the recipe the
// test runs is the README's.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("the recipe has %q %d times, want once:\n%s", old, n, s)
	}
	return strings.Replace(s, old, new, 1)
}

// runPythonScript runs script with py from the repository's root, as a user
// would run the README's recipe.
func runPythonScript(t *testing.T, ctx context.Context, py, script string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "recipe.py")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, py, file)
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("python recipe: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// header reads one header of the record at topic/partition@offset.
func header(t *testing.T, ctx context.Context, e *sagaEnv, topic string, p int32, off int64, key string) string {
	t.Helper()
	cl := newClient(t, e.brokers, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(off)}}))
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(fctx)
		if fctx.Err() != nil {
			t.Fatalf("no record at %s/%d@%d", topic, p, off)
		}
		for _, r := range fs.Records() {
			if r.Offset == off {
				v, _ := event.Header(r, key)
				return v
			}
		}
	}
}

// partitionOf is the partition of the first record with key in topic.
func partitionOf(t *testing.T, ctx context.Context, e *sagaEnv, topic, key string) (int32, bool) {
	t.Helper()
	cl := newClient(t, e.brokers, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(fctx)
		if fctx.Err() != nil {
			return -1, false
		}
		for _, r := range fs.Records() {
			if string(r.Key) == key {
				return r.Partition, true
			}
		}
	}
}

// skipOrFailPart is skipOrFail for one part of a test: outside CI the rest
// still runs.
func skipOrFailPart(t *testing.T, msg string) {
	t.Helper()
	if ci := os.Getenv("CI"); ci == "true" || ci == "1" {
		t.Fatal(msg)
	}
	t.Log(msg)
}
