package runner

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
)

// Globals are the flags every troupe command shares (README: CLI). Each has an
// environment variable; the flag wins over the variable, the variable over
// the default.
type Globals struct {
	Brokers   string
	Registry  string
	API       string
	LogLevel  string
	LogFormat string

	TLS         bool
	TLSCA       string
	TLSCert     string
	TLSKey      string
	TLSInsecure bool
	SASLMech    string
	SASLUser    string
	SASLPass    string

	// AuthTokenFile holds the token of troupe's registry and API: servers
	// require it, clients send it. Without it, TROUPE_AUTH_TOKEN is the
	// token.
	AuthTokenFile string

	// Log is set by Setup.
	Log zerolog.Logger
	// authToken is the token AuthTokenFile or TROUPE_AUTH_TOKEN holds, set
	// by Setup.
	authToken string
}

// AddFlags registers the global flags on fs.
func (g *Globals) AddFlags(f *pflag.FlagSet) {
	envString(f, &g.Brokers, "brokers", "TROUPE_BROKERS", kafka.DefaultBrokers, "Kafka seed brokers, comma-separated host:port")
	envString(f, &g.Registry, "registry", "TROUPE_REGISTRY_URL", "http://127.0.0.1:8081", "schema registry URL (Confluent-compatible)")
	envString(f, &g.API, "api", "TROUPE_API_URL", "http://127.0.0.1:8080", "troupe HTTP API URL, for the saga commands")
	envString(f, &g.LogLevel, "log-level", "TROUPE_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	envString(f, &g.LogFormat, "log-format", "TROUPE_LOG_FORMAT", "console", "log format: console or json")
	envBool(f, &g.TLS, "tls", "TROUPE_TLS", "connect to Kafka with TLS")
	envString(f, &g.TLSCA, "tls-ca", "TROUPE_TLS_CA", "", "PEM file of CA certificates to trust (implies --tls)")
	envString(f, &g.TLSCert, "tls-cert", "TROUPE_TLS_CERT", "", "PEM client certificate for mTLS (with --tls-key)")
	envString(f, &g.TLSKey, "tls-key", "TROUPE_TLS_KEY", "", "PEM client key for mTLS (with --tls-cert)")
	envBool(f, &g.TLSInsecure, "tls-insecure", "TROUPE_TLS_INSECURE", "skip verification of the broker's certificate (testing only)")
	envString(f, &g.SASLMech, "sasl-mechanism", "TROUPE_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	envString(f, &g.SASLUser, "sasl-user", "TROUPE_SASL_USER", "", "SASL user name")
	envSecret(f, &g.SASLPass, "sasl-password", "TROUPE_SASL_PASSWORD", "SASL password (prefer the environment variable: a flag shows in ps)")
	envString(f, &g.AuthTokenFile, "auth-token-file", auth.TokenFileEnv, "",
		"file holding the token of troupe's schema registry and saga API: the servers require it, the commands send it (or the token itself in "+auth.TokenEnv+")")
}

// Setup builds the logger the flags describe and reads the auth token.
func (g *Globals) Setup() error {
	l, err := logging.New(os.Stderr, g.LogLevel, logging.Format(g.LogFormat))
	if err != nil {
		return err
	}
	g.Log = l
	g.authToken, err = auth.LoadToken(g.AuthTokenFile, auth.TokenFlag, os.Getenv(auth.TokenEnv))
	return err
}

// AuthToken is the token of troupe's registry and API (--auth-token-file
// or TROUPE_AUTH_TOKEN), "" for none. Setup reads it.
func (g *Globals) AuthToken() string { return g.authToken }

// RegistryOpts are the schema registry client's options the flags
// describe: the auth token as a bearer token, unless --registry's URL
// carries its own user:password (another registry's basic auth).
func (g *Globals) RegistryOpts() []sr.ClientOpt {
	if u, err := url.Parse(g.Registry); g.authToken == "" || err == nil && u.User != nil {
		return nil
	}
	return []sr.ClientOpt{sr.BearerToken(g.authToken)}
}

// RegistryClient is a client of the schema registry the flags describe.
func (g *Globals) RegistryClient() (*avro.RegistryClient, error) {
	return avro.NewRegistryClient(g.Registry, g.RegistryOpts()...)
}

// ServeAuth are the flags of a command that serves the registry or the
// saga API, beyond the global --auth-token-file.
type ServeAuth struct {
	// ReadTokenFile holds a second, read-only token; without it,
	// TROUPE_AUTH_READ_TOKEN is that token.
	ReadTokenFile string
	// Insecure allows serving beyond loopback without a token.
	Insecure bool
}

// AddFlags registers the flags on f; what names the server, for --help.
func (a *ServeAuth) AddFlags(f *pflag.FlagSet, what string) {
	envString(f, &a.ReadTokenFile, "auth-read-token-file", auth.ReadTokenFileEnv, "",
		"file holding a second token that may only read "+what+" (or the token itself in "+auth.ReadTokenEnv+"); needs --auth-token-file")
	envBool(f, &a.Insecure, "insecure", "TROUPE_INSECURE",
		"serve "+what+" without a token on a non-loopback address (a lab only; otherwise it refuses to start)")
}

// Tokens are the tokens a server the flags describe requires.
func (g *Globals) Tokens(a ServeAuth) (auth.Tokens, error) {
	read, err := auth.LoadToken(a.ReadTokenFile, auth.ReadTokenFlag, os.Getenv(auth.ReadTokenEnv))
	if err != nil {
		return auth.Tokens{}, err
	}
	t := auth.Tokens{Write: g.authToken, Read: read}
	return t, t.Validate()
}

// Guard checks that a server of what on ln may start with the tokens
// (auth.CheckListen), and warns when --insecure lets it serve open beyond
// loopback. flag is the setting that chose ln's address.
func (g *Globals) Guard(ln net.Listener, t auth.Tokens, a ServeAuth, what, flag string) error {
	if err := auth.CheckListen(ln.Addr(), t, a.Insecure, what, flag); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if !t.Enabled() && !auth.IsLoopback(ln.Addr()) {
		g.Log.Warn().Str("addr", ln.Addr().String()).Msg(what + " serves without authentication (--insecure): anyone who reaches it may use it")
	}
	return nil
}

// KafkaConfig is the Kafka connection the flags describe.
func (g *Globals) KafkaConfig() kafka.Config {
	return kafka.Config{
		Brokers:       SplitList(g.Brokers),
		TLS:           g.TLS,
		TLSCAFile:     g.TLSCA,
		TLSCertFile:   g.TLSCert,
		TLSKeyFile:    g.TLSKey,
		TLSInsecure:   g.TLSInsecure,
		SASLMechanism: g.SASLMech,
		SASLUser:      g.SASLUser,
		SASLPassword:  g.SASLPass,
		Logger:        g.Log,
	}
}

// SplitList splits a comma-separated list, dropping empty items.
func SplitList(s string) []string {
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
	// A URL from the environment may carry a password (user:pass@host):
	// --help shows it redacted.
	if u, err := url.Parse(def); err == nil && u.User != nil {
		f.Lookup(name).DefValue = u.Redacted()
	}
}

// envSecret registers a flag whose value --help never shows: its default,
// from env, is set without becoming the flag's printed default, and the
// usage only says whether env set it.
func envSecret(f *pflag.FlagSet, p *string, name, env, usage string) {
	v := os.Getenv(env)
	note := " [" + env + "]"
	if v != "" {
		note = " [" + env + ": set]"
	}
	f.StringVar(p, name, "", usage+note)
	*p = v
}

func envBool(f *pflag.FlagSet, p *bool, name, env, usage string) {
	def := false
	if v, ok := os.LookupEnv(env); ok {
		def = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes")
	}
	f.BoolVar(p, name, def, usage+" ["+env+"]")
}

// EnvTopology and EnvSchemas set, once for every command, the topology file
// (--topology of every command, the FILE of 'troupe topology') and the
// directory of .avsc files (--schemas, schemas --dir), as an image or a
// manifest does: deploy/Dockerfile sets both to the copies it holds under
// /etc/troupe. A flag given on the command line still wins.
const (
	EnvTopology = "TROUPE_TOPOLOGY"
	EnvSchemas  = "TROUPE_SCHEMAS"
)

// envAnnotation is the flag annotation naming the environment variable a
// path flag's default came from (see Given).
const envAnnotation = "troupe_env"

// DefaultTopology is the topology file commands read when none is given:
// $TROUPE_TOPOLOGY, else topology/orders.yaml.
func DefaultTopology() string { return envOr(EnvTopology, "topology/orders.yaml") }

// DefaultSchemas is the schema directory commands read when none is given:
// $TROUPE_SCHEMAS, else schemas.
func DefaultSchemas() string { return envOr(EnvSchemas, "schemas") }

func envOr(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// TopologyFlag registers --topology on f, its default DefaultTopology().
func TopologyFlag(f *pflag.FlagSet, p *string, usage string) {
	PathFlag(f, p, "topology", EnvTopology, "topology/orders.yaml", usage)
}

// PathFlag registers a file or directory flag whose default is $env when
// set, else def. Given tells whether the user chose it (the flag or env).
func PathFlag(f *pflag.FlagSet, p *string, name, env, def, usage string) {
	f.StringVar(p, name, envOr(env, def), usage+" ["+env+"]")
	_ = f.SetAnnotation(name, envAnnotation, []string{env})
}

// Given reports whether flag name of fs was chosen by the user, on the
// command line or, for a PathFlag, by its environment variable: a command
// that ignores its default file when absent must not ignore one the user
// named.
func Given(fs *pflag.FlagSet, name string) bool {
	fl := fs.Lookup(name)
	if fl == nil {
		return false
	}
	if fl.Changed {
		return true
	}
	for _, env := range fl.Annotations[envAnnotation] {
		if os.Getenv(env) != "" {
			return true
		}
	}
	return false
}
