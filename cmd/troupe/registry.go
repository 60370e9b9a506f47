package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/registry"
	"github.com/troupehq/troupe/pkg/runner"
)

const registryLong = `Run troupe's built-in schema registry alone: the Confluent Schema Registry
REST API that Avro serializers in every language use (Java's
KafkaAvroSerializer, Python's confluent-kafka AvroSerializer, franz-go's sr,
kcat -s), stored in a compacted Kafka topic (--topic, created if missing).
'troupe dev' runs the same registry on --registry-port. Avro only (JSON
Schema and Protobuf are refused with 42201), with schema references, soft
and permanent deletion, per-subject compatibility levels and modes
(READWRITE, READONLY, IMPORT); README "The built-in registry" lists the
endpoints.

Run several for availability, on the same brokers and topic: they agree on
every schema id, and a schema registered through one is visible through the
others. Any Confluent-compatible registry can replace it; point troupe at it
with --registry or TROUPE_REGISTRY_URL.

With --auth-token-file (or the token in TROUPE_AUTH_TOKEN) every request
needs the token, as a bearer token or as the password of basic auth (what
Confluent clients send for basic.auth.user.info=user:token); troupe's own
commands send it from the same setting. --auth-read-token-file adds a token
that may only read, look schemas up and check compatibility. Beyond
loopback (--bind 0.0.0.0) the registry refuses to start without a token,
unless --insecure.`

func newRegistryCmd(g *globals) *cobra.Command {
	var (
		port  int
		bind  string
		cfg   registry.Config
		level string
		sa    runner.ServeAuth
	)
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Run the built-in schema registry (Confluent REST API, stored in Kafka)",
		Long:  registryLong,
		Example: `  troupe registry                                   # on 127.0.0.1:8081
  TROUPE_AUTH_TOKEN_FILE=/run/secrets/troupe-token troupe registry --bind 0.0.0.0 --brokers kafka-1:9092,kafka-2:9092
  curl -H "Authorization: Bearer $(cat /run/secrets/troupe-token)" http://127.0.0.1:8081/subjects`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if port < 0 || port > 65535 {
				return usagef("--port %d is not a port (0-65535)", port)
			}
			l, err := registry.ParseLevel(level)
			if err != nil {
				return usagef("--compatibility: %v", err)
			}
			cfg.DefaultLevel = l
			cfg.Kafka = g.KafkaConfig()
			if cfg.Auth, err = g.Tokens(sa); err != nil {
				return asUsage(err)
			}
			srv, err := registry.New(cfg, g.Log)
			if err != nil {
				return asUsage(err)
			}
			addr := net.JoinHostPort(bind, strconv.Itoa(port))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w (is another registry running there? choose another --port)", addr, err)
			}
			if err := g.Guard(ln, cfg.Auth, sa, "the schema registry", "--bind"); err != nil {
				ln.Close()
				return asUsage(err)
			}
			g.Log.Info().Str("url", "http://"+ln.Addr().String()).Str("topic", cfg.Topic).
				Bool("auth", cfg.Auth.Enabled()).Bool("read_token", cfg.Auth.Read != "").Msg("schema registry listening")
			return srv.Serve(cmdContext(cmd), ln)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&port, "port", 8081, "HTTP port (the usual schema registry port)")
	fl.StringVar(&bind, "bind", "127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
	fl.StringVar(&cfg.Topic, "topic", registry.DefaultTopic, "compacted topic that stores the schemas")
	fl.StringVar(&level, "compatibility", string(registry.Backward), "global compatibility level until one is set with PUT /config")
	fl.Int16Var(&cfg.ReplicationFactor, "replication-factor", -1, "replication factor when creating the topic (-1: the broker's default)")
	sa.AddFlags(fl, "the registry")
	return cmd
}
