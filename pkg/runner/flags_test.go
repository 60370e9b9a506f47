package runner

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// Secrets from the environment never show in --help (issue 13: `troupe run
// --help` printed TROUPE_SASL_PASSWORD as the flag's default), and still
// reach the config.
func TestSecretsNotInHelp(t *testing.T) {
	const pass, regPass = "s3cret-sasl-Pa55", "s3cret-registry-Pa55"
	t.Setenv("TROUPE_SASL_PASSWORD", pass)
	t.Setenv("TROUPE_REGISTRY_URL", "https://ops:"+regPass+"@registry.example:8081")
	var g Globals
	f := pflag.NewFlagSet("troupe", pflag.ContinueOnError)
	g.AddFlags(f)
	help := f.FlagUsages()
	for _, secret := range []string{pass, regPass} {
		if strings.Contains(help, secret) {
			t.Errorf("--help shows a secret:\n%s", help)
		}
	}
	for _, want := range []string{"[TROUPE_SASL_PASSWORD: set]", "https://ops:xxxxx@registry.example:8081"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not say %q:\n%s", want, help)
		}
	}
	if err := f.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if g.SASLPass != pass || g.KafkaConfig().SASLPassword != pass || !strings.Contains(g.Registry, regPass) {
		t.Errorf("the environment's secrets did not reach the config: password %q, registry %q", g.SASLPass, g.Registry)
	}
	// The flag still wins over the variable.
	if err := f.Parse([]string{"--sasl-password", "from-flag"}); err != nil || g.SASLPass != "from-flag" {
		t.Errorf("--sasl-password from-flag: %q, %v", g.SASLPass, err)
	}
}

func TestSecretUnsetSaysSo(t *testing.T) {
	t.Setenv("TROUPE_SASL_PASSWORD", "")
	var g Globals
	f := pflag.NewFlagSet("troupe", pflag.ContinueOnError)
	g.AddFlags(f)
	if help := f.FlagUsages(); strings.Contains(help, "TROUPE_SASL_PASSWORD: set") || !strings.Contains(help, "[TROUPE_SASL_PASSWORD]") {
		t.Errorf("--help with the variable unset:\n%s", help)
	}
}

// The token reaches the registry client as a bearer token, unless
// --registry's URL carries its own user:password.
func TestRegistryOptsSendTheToken(t *testing.T) {
	t.Setenv("TROUPE_AUTH_TOKEN", " tok-3f9a \n")
	t.Setenv("TROUPE_AUTH_TOKEN_FILE", "")
	for url, want := range map[string]int{"http://127.0.0.1:8081": 1, "https://svc:pw@registry.example:8081": 0} {
		g := Globals{Registry: url, LogLevel: "error", LogFormat: "json"}
		if err := g.Setup(); err != nil {
			t.Fatal(err)
		}
		if g.AuthToken() != "tok-3f9a" || len(g.RegistryOpts()) != want {
			t.Errorf("%s: token %q, %d options, want tok-3f9a and %d", url, g.AuthToken(), len(g.RegistryOpts()), want)
		}
	}
}
