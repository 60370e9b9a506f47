package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// `TROUPE_SASL_PASSWORD=... troupe run --help` printed the password as the
// flag's default (issue 13). No command's help shows a secret from the
// environment: a password, or the auth tokens (only their files' paths
// are flags).
func TestHelpHidesSecrets(t *testing.T) {
	const pass, regPass, token, readToken = "s3cret-sasl-Pa55", "s3cret-registry-Pa55", "s3cret-auth-t0ken", "s3cret-read-t0ken"
	t.Setenv("TROUPE_SASL_PASSWORD", pass)
	t.Setenv("TROUPE_REGISTRY_URL", "http://ops:"+regPass+"@127.0.0.1:8081")
	t.Setenv("TROUPE_AUTH_TOKEN", token)
	t.Setenv("TROUPE_AUTH_READ_TOKEN", readToken)
	for _, args := range [][]string{{"run", "--help"}, {"--help"}, {"dev", "--help"}, {"registry", "--help"}, {"dlq", "replay", "--help"}, {"saga", "get", "--help"}} {
		root := newRootCmd()
		var outb, errb bytes.Buffer
		root.SetOut(&outb)
		root.SetErr(&errb)
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		out, errs := outb.String(), errb.String()
		if err != nil || !strings.Contains(out, "--sasl-password") || !strings.Contains(out, "--auth-token-file") {
			t.Fatalf("troupe %s: %v, no --sasl-password or --auth-token-file in the help\n%s%s", strings.Join(args, " "), err, out, errs)
		}
		if args[0] == "registry" && !strings.Contains(out, "--auth-read-token-file") {
			t.Errorf("troupe registry --help has no --auth-read-token-file\n%s", out)
		}
		for _, secret := range []string{pass, regPass, token, readToken} {
			if strings.Contains(out+errs, secret) {
				t.Errorf("troupe %s shows a secret from the environment:\n%s%s", strings.Join(args, " "), out, errs)
			}
		}
	}
}
