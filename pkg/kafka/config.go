package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
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
		if c.SASLPassword == "" {
			errs = append(errs, fmt.Errorf("SASL %s needs a password (set TROUPE_SASL_PASSWORD, or --sasl-password)", c.SASLMechanism))
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
	if c.tlsOn() {
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
			return nil, fmt.Errorf("read the CA file of --tls-ca (TROUPE_TLS_CA): %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s of --tls-ca (TROUPE_TLS_CA) holds no PEM certificate", c.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load the client certificate of --tls-cert and --tls-key (TROUPE_TLS_CERT, TROUPE_TLS_KEY): %w", err)
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
		if hint := c.securityHint(err); hint != "" {
			return nil, fmt.Errorf("cannot connect to Kafka at %s: %w: %s", strings.Join(c.Brokers, ","), err, hint)
		}
		return nil, fmt.Errorf("cannot reach Kafka at %s: %w (is the broker running? set --brokers or TROUPE_BROKERS)",
			strings.Join(c.Brokers, ","), err)
	}
	return cl, nil
}

// securityHint names the setting to fix when err, a failed first request,
// comes from TLS or SASL, or "" if it does not. It never quotes the
// password.
func (c *Config) securityHint(err error) string {
	var (
		unknownCA    x509.UnknownAuthorityError
		wrongHost    x509.HostnameError
		invalid      x509.CertificateInvalidError
		notTLS       tls.RecordHeaderError
		op           *net.OpError
		firstReadEOF *kgo.ErrFirstReadEOF
	)
	mech := strings.ToUpper(c.SASLMechanism)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Sprintf("the broker refused user %q with %s: check --sasl-user (TROUPE_SASL_USER) and --sasl-password (TROUPE_SASL_PASSWORD), and that the user has %s credentials (--sasl-mechanism)",
			c.SASLUser, mech, mech)
	case errors.Is(err, kerr.UnsupportedSaslMechanism), errors.Is(err, kerr.IllegalSaslState):
		return fmt.Sprintf("the listener does not take SASL %s: set --sasl-mechanism (TROUPE_SASL_MECHANISM) to one it enables (sasl.enabled.mechanisms), or none if it has no SASL", mech)
	case errors.As(err, &unknownCA):
		return "the broker's certificate is signed by an authority this client does not trust: set --tls-ca (TROUPE_TLS_CA) to the PEM file of the CA that signed it"
	case errors.As(err, &wrongHost):
		return "the broker's certificate is not for the host in --brokers: connect by a name or address the certificate holds"
	case errors.As(err, &invalid):
		return "the broker's certificate is not valid (expired, or not for a server): renew it, or check --tls-ca (TROUPE_TLS_CA)"
	case errors.As(err, &notTLS):
		return "the listener does not speak TLS: drop --tls, --tls-ca, --tls-cert and --tls-key (TROUPE_TLS*), or connect to the broker's TLS port"
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "tls:"):
		// A TLS alert from the broker: it refused our side of the handshake.
		if c.TLSCertFile == "" {
			return "the broker wants a client certificate (mTLS): set --tls-cert and --tls-key (TROUPE_TLS_CERT, TROUPE_TLS_KEY)"
		}
		return fmt.Sprintf("the broker refused the client certificate %s: use --tls-cert and --tls-key (TROUPE_TLS_CERT, TROUPE_TLS_KEY) of a certificate signed by a CA the broker trusts (its ssl.truststore)", c.TLSCertFile)
	case errors.As(err, &firstReadEOF):
		if c.tlsOn() {
			return "the broker closed the connection: if its listener has no TLS drop --tls (TROUPE_TLS); if it wants a client certificate set --tls-cert and --tls-key"
		}
		if mech == "" {
			return "the broker closed the connection: if its listener uses TLS set --tls or --tls-ca (TROUPE_TLS, TROUPE_TLS_CA); if it uses SASL set --sasl-mechanism, --sasl-user and --sasl-password"
		}
		return "the broker closed the connection: if its listener uses TLS set --tls or --tls-ca (TROUPE_TLS, TROUPE_TLS_CA)"
	case mech != "" && errors.Is(err, io.EOF):
		// kfake, and brokers before KIP-152, close the connection on bad
		// credentials rather than answering.
		return "the broker closed the connection: check --sasl-user (TROUPE_SASL_USER), --sasl-password (TROUPE_SASL_PASSWORD) and --sasl-mechanism (TROUPE_SASL_MECHANISM)"
	}
	return ""
}

// tlsOn reports whether c connects with TLS.
func (c *Config) tlsOn() bool { return c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" }
