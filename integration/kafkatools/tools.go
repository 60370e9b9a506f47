// Package kafkatools runs Apache Kafka's own command-line tools (the
// kafka-tools artifact of the Kafka version the integration broker runs:
// TopicCommand, ConsumerGroupCommand, ConsoleConsumer, GetOffsetShell, ...)
// for the test that checks them against `troupe dev`'s embedded broker.
//
// [Fetch] brings the jars from Maven Central once per machine, as
// kafkaharness does the broker's (pom.xml beside this file). [Run] runs
// several tools in one JVM (Tools.java, launched as a source file), one
// after the other, and returns what each printed and its exit code: one
// JVM start instead of one a tool.
package kafkatools

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/troupehq/troupe/integration/kafkaharness"
)

// Fetch makes sure the kafka-tools jars are in the cache
// (kafkaharness.CacheDir()/kafka-tools-<version>/libs) and returns their
// directory. Progress goes to w (may be nil). A missing mvn wraps
// kafkaharness.ErrToolMissing.
func Fetch(ctx context.Context, w io.Writer) (string, error) {
	return kafkaharness.FetchJars(ctx, w, "integration/kafkatools/pom.xml", "kafka-tools", "kafka-tools-")
}

// Command is one tool run: its main class and its arguments.
type Command struct {
	Class string
	Args  []string
}

// Result is what one Command printed (standard output and error
// together) and the code it exited with (0 if it returned, -1 if it threw).
type Result struct {
	Command
	Output string
	Exit   int
}

// Run runs cmds in one JVM over the jars in libs, in order, and returns
// their results; the JVM's own standard error (what escaped the tools'
// capture) goes to logw.
func Run(ctx context.Context, libs string, cmds []Command, logw io.Writer) ([]Result, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("%w: java is not on PATH (install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless`)", kafkaharness.ErrToolMissing)
	}
	src, err := kafkaharness.RepoFile("integration/kafkatools/Tools.java")
	if err != nil {
		return nil, err
	}
	var in bytes.Buffer
	for _, c := range cmds {
		for _, a := range append([]string{c.Class}, c.Args...) {
			if strings.ContainsAny(a, "\t\n") {
				return nil, fmt.Errorf("kafkatools: argument %q of %s has a tab or a newline", a, c.Class)
			}
		}
		in.WriteString(strings.Join(append([]string{c.Class}, c.Args...), "\t") + "\n")
	}
	// C1 only and the serial collector: the tools are short, and start
	// time is what counts (a third of the wall time on 2 cores).
	cmd := exec.CommandContext(ctx, java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-cp", filepath.Join(libs, "*"), src)
	cmd.Stdin = &in
	var out bytes.Buffer
	cmd.Stdout = &out
	if logw != nil {
		cmd.Stderr = logw
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kafkatools: java %s: %w\n%s", filepath.Base(src), err, out.String())
	}
	res, err := parse(out.String(), cmds)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out.String())
	}
	return res, nil
}

// parse splits Tools.java's output into one Result per command.
func parse(s string, cmds []Command) ([]Result, error) {
	var res []Result
	var cur *Result
	var body strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && line == "--- begin "+strconv.Itoa(len(res)):
			if len(res) >= len(cmds) {
				return nil, fmt.Errorf("kafkatools: more results than the %d commands", len(cmds))
			}
			cur = &Result{Command: cmds[len(res)]}
			body.Reset()
		case cur != nil && strings.HasPrefix(line, "--- end "+strconv.Itoa(len(res))+" exit "):
			code, err := strconv.Atoi(strings.TrimPrefix(line, "--- end "+strconv.Itoa(len(res))+" exit "))
			if err != nil {
				return nil, fmt.Errorf("kafkatools: bad end line %q", line)
			}
			cur.Output, cur.Exit = body.String(), code
			res = append(res, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line + "\n")
		}
	}
	if len(res) != len(cmds) {
		return nil, fmt.Errorf("kafkatools: %d results for %d commands", len(res), len(cmds))
	}
	return res, nil
}
