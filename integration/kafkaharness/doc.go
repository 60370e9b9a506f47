// Package kafkaharness runs a real Apache Kafka broker (or a three-node
// cluster) for troupe's integration tests, as the README's Testing section describes.
//
// The broker is the one from Maven Central: [Fetch] asks mvn for
// org.apache.kafka:kafka_2.13 and a Log4j 2 backend (pom.xml beside this
// file) and keeps the jars in a cache outside the repo, keyed by the Kafka
// version, so only the first run on a machine downloads anything (~44 MB).
// [Start] then formats a KRaft storage dir per node and runs each node as a
// `java kafka.Kafka server.properties` child process on free loopback ports:
//
//	Brokers: 1   one combined broker+controller       ~2 s to start
//	Brokers: 3   three combined nodes, static quorum   ~5.5 s (the fault tests)
//
// (2 cores, idle machine; the first start on a machine is ~1 s slower, as it
// writes a JVM class data archive beside the jars that later starts map.)
// The child JVMs are in their own process group and get SIGKILL if the test
// process dies (Linux parent-death signal), so a killed `go test` leaves no
// broker behind.
//
// An integration test package hands its TestMain to [Main], which starts one
// broker for the whole package and exports its address in
// TROUPE_TEST_BROKERS (read it with [Brokers]):
//
//	func TestMain(m *testing.M) { kafkaharness.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaharness.Brokers()...))
//		...
//	}
//
// A fault test that kills brokers takes a cluster of its own with
// [StartCluster]. [StartClusterWith] takes [Options]; with Options.Listener
// the client listener is SASL_SSL (SCRAM-SHA-512 users of
// Options.SCRAMUsers, written at format time) or mTLS, behind certificates
// that a [CA] made in Go at start signs (PEM keystores, no keytool). The
// environment chooses the backend:
//
//	TROUPE_TEST_BROKERS=host:port,...  use that cluster, start nothing
//	TROUPE_TEST_KAFKA=kfake            in-process franz-go kfake (NOT Kafka)
//	(neither)                          the real broker, via Start
//
// Without java or mvn on PATH the tests are skipped, or fail when CI=true.
// The command cmd/kafkabroker starts a broker for manual use or for a
// command's lifetime.
package kafkaharness
