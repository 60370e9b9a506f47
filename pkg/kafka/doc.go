// Package kafka is where troupe's configuration meets franz-go: one Config
// (brokers, client id, TLS, SASL) translated into []kgo.Opt in exactly one
// place, admin helpers on kadm, and the embedded kfake cluster that
// `troupe dev` runs.
package kafka
