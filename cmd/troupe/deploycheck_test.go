package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Helpers that check a deployment file (docker-compose.yml, the Kubernetes
// manifests) against what the binary and the image really have: the
// command tree, the environment variables the flags read, and the layout
// deploy/Dockerfile builds. No Docker engine or cluster runs here.

const repoRoot = "../../"

// imageLayout is what deploy/Dockerfile's final stage puts in the image.
type imageLayout struct {
	copies   map[string]string // image path -> repository path (COPY from the context)
	built    map[string]bool   // image paths copied from the build stage
	writable map[string]bool   // image dirs owned by the image's user
	env      map[string]string
	user     string
	workdir  string
	entry    []string
}

var (
	dockerEnvRE   = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)`)
	dockerEntryRE = regexp.MustCompile(`"([^"]*)"`)
)

func readDockerfile(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(repoRoot + "deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readImageLayout parses deploy/Dockerfile: the instructions of its last
// stage (continuation lines joined).
func readImageLayout(t *testing.T, dockerfile []byte) *imageLayout {
	t.Helper()
	var lines []string
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(dockerfile))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	last := 0
	for i, l := range lines { // only the last stage is the image
		if strings.HasPrefix(strings.ToUpper(l), "FROM ") {
			last = i
		}
	}
	lines = lines[last:]
	img := &imageLayout{copies: map[string]string{}, built: map[string]bool{}, writable: map[string]bool{}, env: map[string]string{}}
	for _, l := range lines {
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "COPY":
			var from, chown string
			var paths []string
			for _, a := range fields[1:] {
				switch {
				case strings.HasPrefix(a, "--from="):
					from = strings.TrimPrefix(a, "--from=")
				case strings.HasPrefix(a, "--chown="):
					chown = strings.TrimPrefix(a, "--chown=")
				default:
					paths = append(paths, a)
				}
			}
			if len(paths) != 2 {
				t.Fatalf("deploy/Dockerfile: %q: want COPY SRC DST", l)
			}
			dst := path.Clean(paths[1])
			if from != "" {
				img.built[dst] = true
			} else {
				img.copies[dst] = path.Clean(paths[0])
			}
			if chown != "" {
				img.writable[dst] = true
			}
		case "ENV":
			for _, m := range dockerEnvRE.FindAllStringSubmatch(strings.TrimPrefix(l, fields[0]), -1) {
				img.env[m[1]] = strings.Trim(m[2], `"`)
			}
		case "USER":
			img.user = fields[1]
		case "WORKDIR":
			img.workdir = path.Clean(fields[1])
		case "ENTRYPOINT":
			img.entry = nil
			for _, m := range dockerEntryRE.FindAllStringSubmatch(l, -1) {
				img.entry = append(img.entry, m[1])
			}
		}
	}
	return img
}

// repoPath is the repository file or directory behind an image path, and
// whether the image has the path at all.
func (img *imageLayout) repoPath(p string) (string, bool) {
	p = path.Clean(p)
	for dst, src := range img.copies {
		if !path.IsAbs(src) {
			src = repoRoot + src
		}
		if p == dst {
			return src, true
		}
		if rest, ok := strings.CutPrefix(p, dst+"/"); ok {
			return src + "/" + rest, true
		}
	}
	for dst := range img.built {
		if p == dst || strings.HasPrefix(p, dst+"/") {
			return "", true
		}
	}
	return "", false
}

// isWritable reports whether p is in a directory the image's user owns.
func (img *imageLayout) isWritable(p string) bool {
	p = path.Clean(p)
	for d := range img.writable {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// checkImagePath checks that the image has p (from the repository) and
// that it is a file (isDir false) or a directory; it returns the repository
// path, or "" with a problem.
func (img *imageLayout) checkImagePath(where, what, p string, isDir bool) (string, []string) {
	rp, ok := img.repoPath(p)
	if !ok || rp == "" {
		return "", []string{fmt.Sprintf("%s: %s %s is not in the image (deploy/Dockerfile copies %s)", where, what, p, img.copiedList())}
	}
	st, err := os.Stat(rp)
	switch {
	case err != nil:
		return "", []string{fmt.Sprintf("%s: %s %s: the image would copy it from %s, which does not exist", where, what, p, strings.TrimPrefix(rp, repoRoot))}
	case st.IsDir() != isDir:
		kind := "a file"
		if isDir {
			kind = "a directory"
		}
		return "", []string{fmt.Sprintf("%s: %s %s is not %s", where, what, p, kind)}
	}
	return rp, nil
}

func (img *imageLayout) copiedList() string {
	var l []string
	for dst := range img.copies {
		l = append(l, dst)
	}
	for dst := range img.built {
		l = append(l, dst)
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

var envInUsageRE = regexp.MustCompile(`\[(TROUPE_[A-Z0-9_]+)(: set)?\]`)

// binaryEnv is every environment variable a flag of the binary reads: the
// [TROUPE_X] of the flags' usage.
func binaryEnv() map[string]bool {
	env := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalNonPersistentFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				for _, m := range envInUsageRE.FindAllStringSubmatch(f.Usage, -1) {
					env[m[1]] = true
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	return env
}

// invocation is a troupe command line as a deployment file runs it, with
// the environment it runs in.
type invocation struct {
	where string
	args  []string
	env   map[string]string
}

// parsed is an invocation resolved against the real command tree.
type parsed struct {
	cmd   *cobra.Command
	flags *pflag.FlagSet
}

// value is a flag's value: the command line's, else its default in the
// invocation's environment.
func (p *parsed) value(name string) (string, bool) {
	f := p.flags.Lookup(name)
	if f == nil {
		return "", false
	}
	return f.Value.String(), true
}

// parseInvocation resolves inv against a root command built in inv's
// environment (the flags' defaults read it, as the binary's do). Problems
// name the command, the unknown flag or the bad argument.
func parseInvocation(t *testing.T, inv invocation, allEnv []string) (*parsed, []string) {
	t.Helper()
	for _, k := range allEnv {
		t.Setenv(k, inv.env[k])
	}
	root := newRootCmd()
	cmd, rest, err := root.Find(inv.args)
	if err != nil || cmd == root {
		return nil, []string{fmt.Sprintf("%s: %q is not a troupe command (%v)", inv.where, inv.args, err)}
	}
	if !cmd.Runnable() {
		return nil, []string{fmt.Sprintf("%s: %q names the command group %s, not a command", inv.where, inv.args, cmd.CommandPath())}
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return nil, []string{fmt.Sprintf("%s: %s: %v", inv.where, cmd.CommandPath(), err)}
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			return nil, []string{fmt.Sprintf("%s: %s: %v", inv.where, cmd.CommandPath(), err)}
		}
	}
	return &parsed{cmd: cmd, flags: cmd.Flags()}, nil
}

// checkEnv checks that every TROUPE_ variable of env is one the binary reads.
func checkEnv(where string, env map[string]string, known map[string]bool) []string {
	var problems []string
	for k := range env {
		if strings.HasPrefix(k, "TROUPE_") && !known[k] {
			problems = append(problems, fmt.Sprintf("%s: environment variable %s is read by no troupe flag", where, k))
		}
	}
	sort.Strings(problems)
	return problems
}

// checkPaths checks the files and directories p's flags name against the
// image: the topology (and its --step or --coordinator), schema
// directories, and a state directory the image's user may write.
func checkPaths(inv invocation, p *parsed, img *imageLayout) []string {
	var problems []string
	if v, ok := p.value("topology"); ok && v != "" && !strings.HasPrefix(p.cmd.CommandPath(), "troupe dev") {
		if rp, pr := img.checkImagePath(inv.where, "--topology", v, false); pr != nil {
			problems = append(problems, pr...)
		} else if topo, err := loadTopology(rp); err != nil {
			problems = append(problems, fmt.Sprintf("%s: --topology %s: %v", inv.where, v, err))
		} else {
			if s, _ := p.value("step"); s != "" {
				if _, ok := topo.Step(s); !ok && p.flags.Lookup("step").Changed {
					problems = append(problems, fmt.Sprintf("%s: --step %s is not a step of %s", inv.where, s, v))
				}
			}
			if c, _ := p.value("coordinator"); c != "" && c != topo.Saga {
				problems = append(problems, fmt.Sprintf("%s: --coordinator %s: %s's saga is %s", inv.where, c, v, topo.Saga))
			}
		}
	}
	for _, name := range []string{"register-schemas", "dir", "schemas"} {
		v, ok := p.value(name)
		if !ok || v == "" || (name == "dir" && !strings.HasPrefix(p.cmd.CommandPath(), "troupe schemas")) {
			continue
		}
		if rp, pr := img.checkImagePath(inv.where, "--"+name, v, true); pr != nil {
			problems = append(problems, pr...)
		} else if m, _ := filepath.Glob(rp + "/*.avsc"); len(m) == 0 {
			problems = append(problems, fmt.Sprintf("%s: --%s %s has no .avsc files", inv.where, name, v))
		}
	}
	if v, ok := p.value("state-dir"); ok && p.cmd.Name() == "run" {
		if v == "" {
			problems = append(problems, fmt.Sprintf("%s: troupe run without --state-dir: give each process a state directory on a volume", inv.where))
		} else if !img.isWritable(v) && !strings.HasPrefix(v, "/tmp/") {
			problems = append(problems, fmt.Sprintf("%s: --state-dir %s is not under a directory the image's user (%s) owns", inv.where, v, img.user))
		}
	}
	return problems
}

// httpPort is the port of p's --http (run) or --port (registry).
func httpPort(p *parsed) (host, port string) {
	if v, ok := p.value("http"); ok {
		host, port, _ = strings.Cut(v, ":")
		return host, port
	}
	if v, ok := p.value("port"); ok {
		b, _ := p.value("bind")
		return b, v
	}
	return "", ""
}

// serves is what p serves beyond its metrics: "the schema registry" or
// "the saga API", or "".
func serves(p *parsed) string {
	switch {
	case p.cmd.Name() == "registry":
		return "the schema registry"
	case p.cmd.Name() == "run":
		if c, _ := p.value("coordinator"); c != "" {
			return "the saga API"
		}
	}
	return ""
}

// checkAuth: a server beyond loopback has troupe's token (or --insecure),
// as the binary requires at start (auth.CheckListen); a token file is one
// the deployment mounts (hasFile); a client of a server with a token has it.
func checkAuth(where string, p *parsed, env map[string]string, hasFile func(string) bool, serverHasToken bool) []string {
	var problems []string
	file, tok := env["TROUPE_AUTH_TOKEN_FILE"], env["TROUPE_AUTH_TOKEN"]
	if v, _ := p.value("auth-token-file"); v != "" {
		file = v
	}
	if file != "" && !hasFile(file) {
		problems = append(problems, fmt.Sprintf("%s: the token file %s is not mounted from a secret", where, file))
	}
	hasToken := file != "" || tok != ""
	if what := serves(p); what != "" {
		host, _ := httpPort(p)
		insecure, _ := p.value("insecure")
		if !hasToken && insecure != "true" && host != "127.0.0.1" && host != "localhost" {
			problems = append(problems, fmt.Sprintf("%s: serves %s on %s without a token: troupe refuses to start; give it TROUPE_AUTH_TOKEN_FILE from a secret", where, what, host))
		}
	}
	if serverHasToken && !hasToken {
		problems = append(problems, fmt.Sprintf("%s: the registry and the saga API require a token, and this service has none (TROUPE_AUTH_TOKEN_FILE)", where))
	}
	return problems
}
