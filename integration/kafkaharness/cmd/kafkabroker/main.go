// Command kafkabroker starts a real Apache Kafka broker (or cluster) with
// troupe's test harness, for developers and make:
//
//	go run ./integration/kafkaharness/cmd/kafkabroker              # until Ctrl-C
//	go run ./integration/kafkaharness/cmd/kafkabroker -brokers 3
//	go run ./integration/kafkaharness/cmd/kafkabroker -- go test ./integration/...
//	go run ./integration/kafkaharness/cmd/kafkabroker -listener SASL_SSL -scram ops:secret-1
//	go run ./integration/kafkaharness/cmd/kafkabroker -listener MTLS
//
// It prints the address (and exports TROUPE_TEST_BROKERS); with a command
// after "--" it runs the command against the broker, prints the broker log
// tail if the command fails, and exits with the command's code. A secured
// broker's client settings (TROUPE_TLS_CA, and TROUPE_SASL_* or a client
// certificate in TROUPE_TLS_CERT and TROUPE_TLS_KEY) are printed too, the
// password excepted, and exported to the command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/troupehq/troupe/integration/kafkaharness"
)

func main() {
	os.Exit(run())
}

func run() int {
	brokers := flag.Int("brokers", 1, "number of nodes (combined broker+controller): 1 or 3")
	dir := flag.String("dir", "", "directory for configs, data and logs (default: a temporary directory, removed on exit)")
	fake := flag.Bool("kfake", false, "run franz-go's in-process kfake instead of Apache Kafka")
	fetch := flag.Bool("fetch", false, "only fetch the Kafka jars into the cache, then exit")
	listener := flag.String("listener", kafkaharness.ListenerPlaintext, "client listener: PLAINTEXT, SASL_SSL (SCRAM-SHA-512, users of -scram) or MTLS")
	scramUser := flag.String("scram", "", "with -listener SASL_SSL: the SCRAM-SHA-512 user to create, as user:password")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: kafkabroker [flags] [-- command args...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *fetch {
		libs, err := kafkaharness.Fetch(ctx, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(libs)
		return 0
	}

	opts := kafkaharness.Options{Brokers: *brokers, Dir: *dir, Fake: *fake, Logger: os.Stderr, Listener: *listener}
	user, pass, _ := strings.Cut(*scramUser, ":")
	if *scramUser != "" {
		opts.SCRAMUsers = map[string]string{user: pass}
	}
	c, err := kafkaharness.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, kafkaharness.ErrToolMissing) {
			return 2
		}
		return 1
	}
	defer c.Stop()
	addrs := strings.Join(c.Addrs(), ",")
	os.Setenv(kafkaharness.EnvBrokers, addrs)
	if c.CA() != nil {
		env := [][2]string{{"TROUPE_BROKERS", addrs}, {"TROUPE_TLS_CA", c.CA().CertFile}}
		if *listener == kafkaharness.ListenerSASLSSL {
			env = append(env, [2]string{"TROUPE_SASL_MECHANISM", "SCRAM-SHA-512"}, [2]string{"TROUPE_SASL_USER", user})
			os.Setenv("TROUPE_SASL_PASSWORD", pass)
		} else {
			cert, key, err := c.CA().Issue("client")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			env = append(env, [2]string{"TROUPE_TLS_CERT", cert}, [2]string{"TROUPE_TLS_KEY", key})
		}
		for _, kv := range env {
			os.Setenv(kv[0], kv[1])
			fmt.Printf("%s=%s\n", kv[0], kv[1])
		}
		if *listener == kafkaharness.ListenerSASLSSL {
			fmt.Println("TROUPE_SASL_PASSWORD=(the password of -scram)")
		}
	}

	args := flag.Args()
	if len(args) == 0 {
		fmt.Printf("%s=%s\n", kafkaharness.EnvBrokers, addrs)
		fmt.Fprintln(os.Stderr, "kafkabroker: running; Ctrl-C to stop")
		<-ctx.Done()
		return 0
	}

	fmt.Fprintf(os.Stderr, "kafkabroker: %s=%s %s\n", kafkaharness.EnvBrokers, addrs, strings.Join(args, " "))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "kafkabroker: %v\n", err)
		return 127
	}
	// The command shares our terminal, so Ctrl-C reaches it directly; we
	// only wait for it, and stop the broker once it is gone.
	werr := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if werr != nil && code == 0 {
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "\nkafkabroker: command failed (exit %d); broker log tail:\n%s\n", code, c.LogTail(60))
	}
	return code
}
