package kafka

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// A connection refused for its credentials or certificates fails at once
// with an error naming the flag to fix, and never the password. (The real
// broker's SASL_SSL and mTLS listeners: integration/security_test.go.)
func TestNewClientSecurityErrors(t *testing.T) {
	const pass = "s3cret-Pa55-for-kfake"
	// httptest's certificate is for 127.0.0.1, signed by itself.
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func(opts ...kfake.Opt) string {
		c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c.ListenAddrs()[0]
	}
	sasl := start(kfake.EnableSASL(), kfake.Superuser(SASLScramSHA512, "ops", pass))
	tlsOnly := start(kfake.TLS(&tls.Config{Certificates: srv.TLS.Certificates}))
	mtls := start(kfake.TLS(&tls.Config{Certificates: srv.TLS.Certificates, ClientAuth: tls.RequireAnyClientCert}))

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // in the error; nil: connects
	}{
		{"sasl ok", Config{Brokers: []string{sasl}, SASLMechanism: SASLScramSHA512, SASLUser: "ops", SASLPassword: pass}, nil},
		{"wrong password", Config{Brokers: []string{sasl}, SASLMechanism: SASLScramSHA512, SASLUser: "ops", SASLPassword: pass + "x"},
			[]string{"--sasl-user", "--sasl-password", "TROUPE_SASL_PASSWORD"}}, // kfake hangs up; Kafka answers SASL_AUTHENTICATION_FAILED
		{"no sasl", Config{Brokers: []string{sasl}}, []string{"--sasl-mechanism", "--sasl-user", "--sasl-password"}},
		{"tls ok", Config{Brokers: []string{tlsOnly}, TLSCAFile: ca}, nil},
		{"untrusted broker", Config{Brokers: []string{tlsOnly}, TLS: true}, []string{"--tls-ca", "TROUPE_TLS_CA", "does not trust"}},
		{"plaintext to tls", Config{Brokers: []string{tlsOnly}}, []string{"--tls"}},
		{"no client cert", Config{Brokers: []string{mtls}, TLSCAFile: ca}, []string{"wants a client certificate", "--tls-cert", "--tls-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			begin := time.Now()
			cl, err := NewClient(ctx, tc.cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("NewClient: %v", err)
				}
				cl.Close()
				return
			}
			if err == nil {
				cl.Close()
				t.Fatal("NewClient connected")
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("failed after %s, want at once", d)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), pass) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
