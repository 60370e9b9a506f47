// Package runner is what `troupe run` is made of, exported so that a user's
// own binary gets the same command, flags, HTTP endpoints and shutdown
// behaviour with one call:
//
//	func main() {
//		runner.Main(runner.App{
//			Name:  "orders-steps",
//			Types: orders.Register,              // the Avro event types
//			Steps: orders.Steps,                 // the step handlers, by name
//		})
//	}
//
// The binary then runs `orders-steps run --topology topology/orders.yaml
// --step payment`, with every global flag and environment variable of
// troupe (--brokers/TROUPE_BROKERS, --registry/TROUPE_REGISTRY_URL, TLS,
// SASL, logging), /metrics, /healthz and /readyz on --http, and a clean
// shutdown on SIGTERM. Deploying a step is "build your binary, run N
// replicas": Kafka spreads the partitions over them.
package runner
