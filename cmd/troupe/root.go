package main

import (
	"context"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
)

// globals are the flags every command shares (DESIGN §7). Each has an
// environment variable; the flag wins over the variable, the variable over
// the default.
type globals struct {
	brokers   string
	registry  string
	api       string
	logLevel  string
	logFormat string

	tls         bool
	tlsCA       string
	tlsCert     string
	tlsKey      string
	tlsInsecure bool
	saslMech    string
	saslUser    string
	saslPass    string

	log zerolog.Logger
}

const rootLong = `troupe runs business workflows (sagas) as a choreography of Kafka step
processors: each step consumes events, keeps per-instance state in a local
store rebuilt from a compacted changelog, and emits new events; a saga
coordinator drives compensation in reverse order when a saga fails.

Start here:
  troupe dev                     the whole stack in one process (embedded Kafka,
                                 schema registry, the example order saga, demo load)
  troupe tail --topic orders     in a second terminal: watch the events

Every global flag also reads an environment variable (shown in brackets).
The defaults are where 'troupe dev' listens, so no flags are needed against it.`

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "troupe",
		Short:         "Kafka-native saga choreography: steps, state, compensation, recovery",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := logging.New(os.Stderr, g.logLevel, logging.Format(g.logFormat))
			if err != nil {
				return asUsage(err)
			}
			g.log = l
			return nil
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v (see '%s --help')", err, cmd.CommandPath())
	})

	f := root.PersistentFlags()
	envString(f, &g.brokers, "brokers", "TROUPE_BROKERS", kafka.DefaultBrokers, "Kafka seed brokers, comma-separated host:port")
	envString(f, &g.registry, "registry", "TROUPE_REGISTRY_URL", "http://127.0.0.1:8081", "schema registry URL (Confluent-compatible)")
	envString(f, &g.api, "api", "TROUPE_API_URL", "http://127.0.0.1:8080", "troupe HTTP API URL, for the saga commands")
	envString(f, &g.logLevel, "log-level", "TROUPE_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	envString(f, &g.logFormat, "log-format", "TROUPE_LOG_FORMAT", "console", "log format: console or json")
	envBool(f, &g.tls, "tls", "TROUPE_TLS", "connect to Kafka with TLS")
	envString(f, &g.tlsCA, "tls-ca", "TROUPE_TLS_CA", "", "PEM file of CA certificates to trust (implies --tls)")
	envString(f, &g.tlsCert, "tls-cert", "TROUPE_TLS_CERT", "", "PEM client certificate for mTLS (with --tls-key)")
	envString(f, &g.tlsKey, "tls-key", "TROUPE_TLS_KEY", "", "PEM client key for mTLS (with --tls-cert)")
	envBool(f, &g.tlsInsecure, "tls-insecure", "TROUPE_TLS_INSECURE", "skip verification of the broker's certificate (testing only)")
	envString(f, &g.saslMech, "sasl-mechanism", "TROUPE_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	envString(f, &g.saslUser, "sasl-user", "TROUPE_SASL_USER", "", "SASL user name")
	envString(f, &g.saslPass, "sasl-password", "TROUPE_SASL_PASSWORD", "", "SASL password (prefer the environment variable)")

	root.AddCommand(
		newVersionCmd(),
		newDevCmd(g),
		newTopologyCmd(),
		newTopicsCmd(g),
		newSagaCmd(g),
		newRunCmd(g),
		newDLQCmd(g), newReplayCmd(g),
		newSchemasCmd(g), newProduceCmd(g), newTailCmd(g), newRegistryCmd(g),
		newStateCmd(g),
	)
	return root
}

// kafkaConfig is the Kafka connection the global flags describe.
func (g *globals) kafkaConfig() kafka.Config {
	return kafka.Config{
		Brokers:       splitList(g.brokers),
		TLS:           g.tls,
		TLSCAFile:     g.tlsCA,
		TLSCertFile:   g.tlsCert,
		TLSKeyFile:    g.tlsKey,
		TLSInsecure:   g.tlsInsecure,
		SASLMechanism: g.saslMech,
		SASLUser:      g.saslUser,
		SASLPassword:  g.saslPass,
		Logger:        g.log,
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envString(f *pflag.FlagSet, p *string, name, env, def, usage string) {
	if v, ok := os.LookupEnv(env); ok && v != "" {
		def = v
	}
	f.StringVar(p, name, def, usage+" ["+env+"]")
}

func envBool(f *pflag.FlagSet, p *bool, name, env, usage string) {
	def := false
	if v, ok := os.LookupEnv(env); ok {
		def = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes")
	}
	f.BoolVar(p, name, def, usage+" ["+env+"]")
}

// cmdContext returns the command's context (cancelled on SIGINT/SIGTERM).
func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
