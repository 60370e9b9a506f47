package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/metrics"
)

type devFlags struct {
	kafkaPort    int
	registryPort int
	dataDir      string
	http         string
	demoRate     float64
}

const devLong = `Run the whole troupe stack in one process, for development and demos:

  - an embedded Kafka-compatible broker (franz-go's kfake) on --kafka-port,
    persisted under --data-dir so a restart keeps topics, records and offsets;
  - the HTTP server on --http: /healthz, /readyz, /metrics and the API.

Any Kafka client can connect to the embedded broker (troupe tail, kcat, Java
or Python clients); producing to a new topic creates it. Stop with Ctrl-C.

Delete --data-dir to start from scratch.`

func newDevCmd(g *globals) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the embedded stack: Kafka, registry, the example saga, HTTP, demo load",
		Long:  devLong,
		Example: `  troupe dev                          # everything on the defaults
  troupe dev --data-dir /tmp/t --demo-rate 20
  troupe dev --kafka-port 19092 --http 127.0.0.1:18080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd, g, f) },
	}
	fl := cmd.Flags()
	fl.IntVar(&f.kafkaPort, "kafka-port", 9092, "port of the embedded Kafka broker (loopback)")
	fl.IntVar(&f.registryPort, "registry-port", 8081, "port of the built-in schema registry (loopback)")
	fl.StringVar(&f.dataDir, "data-dir", ".troupe", "directory for the broker's data and the steps' state")
	fl.StringVar(&f.http, "http", "127.0.0.1:8080", "address of the HTTP server (/metrics, /healthz, /readyz, /api)")
	fl.Float64Var(&f.demoRate, "demo-rate", 5, "demo orders per second (0 = no demo load)")
	return cmd
}

func runDev(cmd *cobra.Command, g *globals, f devFlags) error {
	ctx := cmdContext(cmd)
	log := g.log.With().Str("component", "dev").Logger()
	if f.kafkaPort <= 0 || f.kafkaPort > 65535 {
		return usagef("--kafka-port %d is not a port (1-65535)", f.kafkaPort)
	}

	reg := metrics.NewRegistry(version)
	srv := api.New(reg, log)
	ln, err := api.Listen(f.http, "--http")
	if err != nil {
		return err
	}
	defer ln.Close()

	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{
		Port:    f.kafkaPort,
		DataDir: filepath.Join(f.dataDir, "kafka"),
		Logger:  log,
	})
	if err != nil {
		return err
	}
	defer func() {
		broker.Close()
		log.Info().Msg("embedded Kafka stopped")
	}()
	log.Info().Str("brokers", broker.Addr()).Str("data_dir", f.dataDir).Msg("embedded Kafka ready")

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return api.Serve(ctx, ln, srv.Handler()) })
	log.Info().Str("http", "http://"+ln.Addr().String()).Msg("HTTP ready: /metrics /healthz /readyz")
	fmt.Fprintf(cmd.ErrOrStderr(), "\ntroupe dev is up. In another terminal:\n  troupe tail --topic orders --follow\n  curl -s http://%s/metrics | grep troupe_\nCtrl-C stops.\n\n", ln.Addr())

	<-ctx.Done()
	log.Info().Msg("shutting down")
	return eg.Wait()
}
