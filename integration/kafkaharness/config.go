package kafkaharness

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// defaultJavaOpts are the JVM flags of kafka-recipe.md: a small heap that
// still runs a test workload, and G1 with short pauses.
var defaultJavaOpts = []string{
	"-Xms256m", "-Xmx512m",
	"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
	"-XX:+ExitOnOutOfMemoryError",
	"-Djava.awt.headless=true",
}

// log4jConfig sends the broker's log to stdout, which the harness points at
// the node's server.log: one file holds both Log4j output and anything the
// JVM itself prints (bad flags, crashes), in order.
const log4jConfig = `status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
`

// nodePorts are one node's listener ports. internal is 0 unless the
// cluster is secured (see Options.Listener).
type nodePorts struct {
	broker, controller, internal int
}

// Listeners that Options.Listener chooses.
const (
	// ListenerPlaintext: clients connect without TLS or authentication.
	ListenerPlaintext = "PLAINTEXT"
	// ListenerSASLSSL: TLS (the broker's certificate signed by the
	// cluster's CA) and SASL SCRAM-SHA-512 with the users of
	// Options.SCRAMUsers.
	ListenerSASLSSL = "SASL_SSL"
	// ListenerMTLS: TLS both ways; a client must present a certificate
	// the cluster's CA signed (Kafka's SSL with ssl.client.auth=required).
	ListenerMTLS = "MTLS"
)

// secured reports whether listener is one of the TLS ones.
func secured(listener string) bool { return listener == ListenerSASLSSL || listener == ListenerMTLS }

// listenerProperties are the listener keys of server.properties. A secured
// cluster puts clients on CLIENT (its advertised address is Addrs') and
// keeps a PLAINTEXT INTERNAL listener for the brokers among themselves and
// for the harness's readiness checks. keystore and truststore are PEM files
// (ssl.keystore.type=PEM: no keytool needed).
func listenerProperties(listener string, me nodePorts, keystore, truststore string) [][2]string {
	if !secured(listener) {
		return [][2]string{
			{"listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", me.broker, me.controller)},
			{"advertised.listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", me.broker)},
			{"inter.broker.listener.name", "PLAINTEXT"},
			{"controller.listener.names", "CONTROLLER"},
			{"listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"},
		}
	}
	protocol := "SASL_SSL"
	if listener == ListenerMTLS {
		protocol = "SSL"
	}
	kv := [][2]string{
		{"listeners", fmt.Sprintf("CLIENT://127.0.0.1:%d,INTERNAL://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", me.broker, me.internal, me.controller)},
		{"advertised.listeners", fmt.Sprintf("CLIENT://127.0.0.1:%d,INTERNAL://127.0.0.1:%d", me.broker, me.internal)},
		{"inter.broker.listener.name", "INTERNAL"},
		{"controller.listener.names", "CONTROLLER"},
		{"listener.security.protocol.map", "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:" + protocol},
		{"listener.name.client.ssl.keystore.type", "PEM"},
		{"listener.name.client.ssl.keystore.location", keystore},
	}
	if listener == ListenerSASLSSL {
		return append(kv,
			[2]string{"listener.name.client.sasl.enabled.mechanisms", "SCRAM-SHA-512"},
			[2]string{"listener.name.client.scram-sha-512.sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required;"},
		)
	}
	return append(kv,
		[2]string{"listener.name.client.ssl.client.auth", "required"},
		[2]string{"listener.name.client.ssl.truststore.type", "PEM"},
		[2]string{"listener.name.client.ssl.truststore.location", truststore},
	)
}

// serverProperties renders node id's server.properties (id is 1-based). The
// values are kafka-recipe.md's, plus a few that make tests fast: the log
// cleaner wakes every second, and a dead broker is fenced after 5 s instead of
// 9 s. listeners are listenerProperties'; extra overrides or adds keys.
func serverProperties(id int, ports []nodePorts, listeners [][2]string, dataDir string, extra map[string]string) string {
	n := len(ports)
	voters := make([]string, n)
	for i, p := range ports {
		voters[i] = fmt.Sprintf("%d@127.0.0.1:%d", i+1, p.controller)
	}
	// Replicate internal and default topics to min(n, 3) nodes, and with 3
	// replicas require 2 in sync, so one node can die.
	rf, isr := strconv.Itoa(min(n, 3)), "1"
	if n >= 3 {
		isr = "2"
	}
	kv := [][2]string{
		{"process.roles", "broker,controller"},
		{"node.id", strconv.Itoa(id)},
		{"controller.quorum.voters", strings.Join(voters, ",")},
	}
	kv = append(kv, listeners...)
	kv = append(kv, [][2]string{
		{"log.dirs", dataDir},
		{"num.partitions", "1"},
		{"default.replication.factor", rf},
		{"min.insync.replicas", isr},
		{"offsets.topic.replication.factor", rf},
		{"transaction.state.log.replication.factor", rf},
		{"transaction.state.log.min.isr", isr},
		{"share.coordinator.state.topic.replication.factor", rf},
		{"share.coordinator.state.topic.min.isr", isr},
		{"group.initial.rebalance.delay.ms", "0"},
		// Smaller footprint for 2 cores.
		{"offsets.topic.num.partitions", "1"},
		{"transaction.state.log.num.partitions", "1"},
		{"share.coordinator.state.topic.num.partitions", "1"},
		{"num.network.threads", "2"},
		{"num.io.threads", "2"},
		{"background.threads", "2"},
		{"log.cleaner.dedupe.buffer.size", "8388608"},
		// Test speed: compaction tests wait for the cleaner, fault tests for
		// the controller to fence a killed broker.
		{"log.cleaner.backoff.ms", "1000"},
		{"broker.heartbeat.interval.ms", "500"},
		{"broker.session.timeout.ms", "5000"},
		// A KIP-848 member killed with kill -9 (a saga coordinator in the
		// saga tests) is fenced after 6 s rather than the default 45 s,
		// so its partitions move to its restart in seconds.
		{"group.consumer.min.heartbeat.interval.ms", "1000"},
		{"group.consumer.heartbeat.interval.ms", "1000"},
		{"group.consumer.min.session.timeout.ms", "6000"},
		{"group.consumer.session.timeout.ms", "6000"},
	}...)
	var b strings.Builder
	b.WriteString("# Written by troupe's kafkaharness.\n")
	seen := map[string]bool{}
	for _, p := range kv {
		v := p[1]
		if o, ok := extra[p[0]]; ok {
			v = o
		}
		seen[p[0]] = true
		fmt.Fprintf(&b, "%s=%s\n", p[0], v)
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, extra[k])
	}
	return b.String()
}

// newClusterID returns a random Kafka Uuid in its string form: 16 bytes,
// unpadded URL-safe base64 (22 chars), which is what `StorageTool
// random-uuid` prints. Generating it here saves a JVM start. Like Kafka's
// Uuid.randomUuid it avoids a leading '-', which command lines would take
// for a flag.
func newClusterID() (string, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("kafkaharness: cluster id: %w", err)
		}
		b[6] = b[6]&0x0f | 0x40 // version 4, as java.util.UUID.randomUUID
		b[8] = b[8]&0x3f | 0x80
		id := base64.RawURLEncoding.EncodeToString(b[:])
		if id[0] != '-' {
			return id, nil
		}
	}
}

// freePorts reserves n loopback ports by listening on :0, then releases them
// all at once for the broker to bind. Another process could take one in
// between; Start retries on a bind failure.
func freePorts(n int) ([]int, error) {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kafkaharness: find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// scramSafe is what a SCRAM user name or password may hold: the storage
// tool's --add-scram syntax has no escapes.
var scramSafe = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// checkSecurity checks Options.Listener and SCRAMUsers.
func checkSecurity(opts Options) error {
	switch opts.Listener {
	case "", ListenerPlaintext, ListenerSASLSSL, ListenerMTLS:
	default:
		return fmt.Errorf("kafkaharness: Listener is %q, want %q, %q or %q", opts.Listener, ListenerPlaintext, ListenerSASLSSL, ListenerMTLS)
	}
	if opts.Fake && secured(opts.Listener) {
		return fmt.Errorf("kafkaharness: Listener %s needs the real broker (the harness does not secure kfake)", opts.Listener)
	}
	if opts.Listener == ListenerSASLSSL && len(opts.SCRAMUsers) == 0 {
		return fmt.Errorf("kafkaharness: Listener %s needs at least one of SCRAMUsers", opts.Listener)
	}
	for u, p := range opts.SCRAMUsers {
		if !scramSafe.MatchString(u) || !scramSafe.MatchString(p) {
			return fmt.Errorf("kafkaharness: SCRAM user %q or its password has characters other than letters, digits and ._-", u)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
