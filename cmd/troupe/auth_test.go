package main

import (
	"strings"
	"testing"
)

// A registry or saga API on a non-loopback address without a token refuses
// to start (exit 2), naming the flag that chose the address, the token's
// settings and --insecure; nothing is started before.
func TestServersRefuseNetworkWithoutToken(t *testing.T) {
	t.Setenv("TROUPE_AUTH_TOKEN", "")
	t.Setenv("TROUPE_AUTH_TOKEN_FILE", "")
	t.Setenv("TROUPE_INSECURE", "")
	want := []string{") without a token: set --auth-token-file (or TROUPE_AUTH_TOKEN_FILE, or the token itself in TROUPE_AUTH_TOKEN)", "--insecure"}
	for _, c := range []struct {
		args []string
		what string
	}{
		{[]string{"registry", "--bind", "0.0.0.0", "--port", "0", "--brokers", "127.0.0.1:1"}, "refusing to serve the schema registry on "},
		{[]string{"run", "--coordinator", "order-fulfillment", "--topology", topologyFile, "--http", "0.0.0.0:0", "--brokers", "127.0.0.1:1"}, "refusing to serve the saga API on "},
		{[]string{"dev", "--http", "0.0.0.0:0", "--data-dir", t.TempDir(), "--kafka-port", "1"}, "refusing to serve the saga API on "},
	} {
		out, code := runCLI(t, c.args...)
		if code != exitUsage {
			t.Errorf("troupe %s: exit %d, want 2\n%s", strings.Join(c.args, " "), code, out)
			continue
		}
		for _, w := range append(want, c.what) {
			if !strings.Contains(out, w) {
				t.Errorf("troupe %s: output lacks %q\n%s", strings.Join(c.args, " "), w, out)
			}
		}
	}
	t.Setenv("TROUPE_AUTH_READ_TOKEN", "r")
	if out, code := runCLI(t, "registry", "--port", "0", "--brokers", "127.0.0.1:1"); code != exitUsage || !strings.Contains(out, "needs a write token too") {
		t.Errorf("troupe registry with a read token alone: exit %d, want 2\n%s", code, out)
	}
}
