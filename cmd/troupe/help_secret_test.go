package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// `TROUPE_SASL_PASSWORD=... troupe run --help` printed the password as the
// flag's default (issue 13). No command's help shows a secret from the
// environment.
func TestHelpHidesSecrets(t *testing.T) {
	const pass, regPass = "s3cret-sasl-Pa55", "s3cret-registry-Pa55"
	t.Setenv("TROUPE_SASL_PASSWORD", pass)
	t.Setenv("TROUPE_REGISTRY_URL", "http://ops:"+regPass+"@127.0.0.1:8081")
	for _, args := range [][]string{{"run", "--help"}, {"--help"}, {"dev", "--help"}, {"registry", "--help"}, {"dlq", "replay", "--help"}} {
		root := newRootCmd()
		var outb, errb bytes.Buffer
		root.SetOut(&outb)
		root.SetErr(&errb)
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		out, errs := outb.String(), errb.String()
		if err != nil || !strings.Contains(out, "--sasl-password") {
			t.Fatalf("troupe %s: %v, no --sasl-password in the help\n%s%s", strings.Join(args, " "), err, out, errs)
		}
		for _, secret := range []string{pass, regPass} {
			if strings.Contains(out+errs, secret) {
				t.Errorf("troupe %s shows a secret from the environment:\n%s%s", strings.Join(args, " "), out, errs)
			}
		}
	}
}
