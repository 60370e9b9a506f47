package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/troupehq/troupe/pkg/logging"
)

// DefaultBrokers is where `troupe dev` listens, so a newcomer's second
// terminal needs no flags.
const DefaultBrokers = "127.0.0.1:9092"

// SASL mechanisms troupe supports.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Config is how troupe connects to Kafka. The zero value is not usable: set at
// least Brokers (the CLI fills it from --brokers / TROUPE_BROKERS).
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID names this client in broker logs and quotas. Default "troupe".
	ClientID string

	// TLS enables TLS. TLSCAFile adds a CA bundle (PEM) to trust; TLSCertFile
	// and TLSKeyFile set a client certificate for mTLS. TLSInsecure skips
	// server certificate verification (only for testing).
	TLS         bool
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string
	TLSInsecure bool

	// SASLMechanism is empty (no SASL), PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	SASLMechanism string
	SASLUser      string
	SASLPassword  string

	// Logger receives franz-go's warnings and errors.
	Logger zerolog.Logger
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers configured (set --brokers or TROUPE_BROKERS, e.g. 127.0.0.1:9092)"))
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("broker %q is not host:port (set --brokers or TROUPE_BROKERS, e.g. 127.0.0.1:9092)", b))
		}
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case "":
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.SASLUser == "" {
			errs = append(errs, fmt.Errorf("SASL %s needs a user (set --sasl-user or TROUPE_SASL_USER)", c.SASLMechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown SASL mechanism %q (use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", c.SASLMechanism))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("TLS client certificate needs both --tls-cert and --tls-key"))
	}
	return errors.Join(errs...)
}

// Opts translates c into franz-go options. Callers append their own options
// (consumer group, transactional id, ...) after these.
func (c *Config) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	id := c.ClientID
	if id == "" {
		id = "troupe"
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(id),
		kgo.WithLogger(logging.Kgo(c.Logger)),
		kgo.DialTimeout(5 * time.Second),
	}
	if c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" {
		cfg, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case SASLPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsMechanism()))
	case SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha256Mechanism()))
	case SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLSInsecure} //nolint:gosec // opt-in for tests
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", c.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// NewClient builds a client from c plus extra options and checks that a
// broker answers, so that an unreachable cluster fails fast with an error
// that says what to do instead of hanging in retries.
func NewClient(ctx context.Context, c Config, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := c.Opts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("cannot reach Kafka at %s: %w (is the broker running? set --brokers or TROUPE_BROKERS)",
			strings.Join(c.Brokers, ","), err)
	}
	return cl, nil
}
