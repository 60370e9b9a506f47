package runner

import (
	"net"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestDevExports(t *testing.T) {
	def := bannerAddrs{Brokers: "127.0.0.1:9092", Registry: "http://127.0.0.1:8081", API: "http://127.0.0.1:8080"}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	other := bannerAddrs{Brokers: "127.0.0.1:19092", Registry: "http://127.0.0.1:18081", API: "http://127.0.0.1:18080"}
	for _, tc := range []struct {
		name string
		a    bannerAddrs
		env  func(string) string
		want string
	}{
		{"defaults", def, env(), ""},
		{"every port moved", other, env(), "export TROUPE_BROKERS=127.0.0.1:19092 TROUPE_REGISTRY_URL=http://127.0.0.1:18081 TROUPE_API_URL=http://127.0.0.1:18080"},
		{"only the broker moved", bannerAddrs{Brokers: "127.0.0.1:19092", Registry: def.Registry, API: def.API}, env(), "export TROUPE_BROKERS=127.0.0.1:19092"},
		{"the shell points elsewhere", def, env("TROUPE_API_URL", "http://api.example:80"), "export TROUPE_API_URL=http://127.0.0.1:8080"},
		{"a token file", bannerAddrs{Brokers: def.Brokers, Registry: def.Registry, API: def.API, TokenFile: "/run/t"}, env(), "export TROUPE_AUTH_TOKEN_FILE=/run/t"},
		{"the shell has the token file", bannerAddrs{Brokers: def.Brokers, Registry: def.Registry, API: def.API, TokenFile: "/run/t"}, env("TROUPE_AUTH_TOKEN_FILE", "/run/t"), ""},
		{"the shell already points here", other, env("TROUPE_BROKERS", "127.0.0.1:19092", "TROUPE_REGISTRY_URL", "http://127.0.0.1:18081", "TROUPE_API_URL", "http://127.0.0.1:18080"), ""},
	} {
		if got := devExports(tc.a, tc.env); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The defaults devExports compares with are the global flags' own.
func TestDevExportsDefaultsAreTheFlags(t *testing.T) {
	for _, k := range []string{"TROUPE_BROKERS", "TROUPE_REGISTRY_URL", "TROUPE_API_URL"} {
		t.Setenv(k, "")
	}
	var g Globals
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	g.AddFlags(fs)
	if g.Brokers != "127.0.0.1:9092" || g.Registry != defaultRegistryURL || g.API != defaultAPIURL {
		t.Fatalf("flag defaults %q %q %q, banner defaults %q %q", g.Brokers, g.Registry, g.API, defaultRegistryURL, defaultAPIURL)
	}
}

func TestLoopbackAddrAndBanner(t *testing.T) {
	for in, want := range map[string]string{"0.0.0.0:8080": "127.0.0.1:8080", "[::]:8080": "127.0.0.1:8080", "127.0.0.1:18080": "127.0.0.1:18080", "[::1]:9": "[::1]:9"} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := loopbackAddr(a); got != want {
			t.Errorf("loopbackAddr(%s) = %s, want %s", in, got, want)
		}
	}
	var b strings.Builder
	printBanner(&b, exampleTopology(t, nil), DevOptions{DataDir: ".troupe"}, bannerAddrs{Brokers: "127.0.0.1:9092", Registry: defaultRegistryURL, API: defaultAPIURL, UI: "127.0.0.1:8080"}, func(string) string { return "" })
	if strings.Contains(b.String(), "export") || !strings.Contains(b.String(), "  troupe tail --topic orders --follow\n") {
		t.Errorf("banner on the defaults:\n%s", b.String())
	}
}
