package kafka

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process Kafka-compatible broker (franz-go's kfake),
// persisted to a data directory so that a restart keeps topics, records and
// group offsets. It is the default of `troupe dev`; it has no replication.
type Embedded struct {
	c    *kfake.Cluster
	addr string
}

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	// Port to listen on (loopback only); 0 picks a free port.
	Port int
	// DataDir persists the cluster; empty keeps everything in memory.
	DataDir string
	// Partitions of auto-created topics; default 1.
	Partitions int
	Logger     zerolog.Logger
}

// StartEmbedded starts the embedded broker. Producing to a topic that does
// not exist creates it, as Kafka's default does.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	const host = "127.0.0.1" // kfake listens and advertises on loopback
	port := cfg.Port
	if port == 0 {
		p, err := freePort(host)
		if err != nil {
			return nil, err
		}
		port = p
	}
	// Check the port first so that a clash is reported with the flag that
	// fixes it.
	if ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
		return nil, fmt.Errorf("embedded Kafka cannot listen on %s:%d: %w (is another broker or troupe dev running? choose another port with --kafka-port)", host, port, err)
	} else {
		ln.Close()
	}
	opts := []kfake.Opt{
		kfake.Ports(port),
		kfake.AllowAutoTopicCreation(),
		kfake.ClusterID("troupe-dev"),
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "30000"}),
	}
	if cfg.Partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(cfg.Partitions))
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("create embedded Kafka data dir %s: %w (choose another with --data-dir)", cfg.DataDir, err)
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded Kafka on port %d (data dir %q): %w", port, cfg.DataDir, err)
	}
	return &Embedded{c: c, addr: net.JoinHostPort(host, strconv.Itoa(port))}, nil
}

// Addr is the broker's host:port.
func (e *Embedded) Addr() string { return e.addr }

// Cluster exposes the kfake cluster (for tests that inject faults).
func (e *Embedded) Cluster() *kfake.Cluster { return e.c }

// Close stops the broker and flushes its data dir.
func (e *Embedded) Close() { e.c.Close() }

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
