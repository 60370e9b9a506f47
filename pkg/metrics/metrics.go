// Package metrics builds the Prometheus registry a troupe process serves on
// /metrics. Components take a prometheus.Registerer and register their own
// troupe_* series on it; this package adds the process and Go runtime
// collectors and the build info series.
package metrics

import (
	"errors"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every troupe metric.
const Namespace = "troupe"

// NewRegistry returns a registry with the process and Go collectors and
// troupe_build_info{version, goversion} set to 1.
func NewRegistry(version string) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
	)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "Build information of this troupe process; always 1.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	r.MustRegister(info)
	return r
}

// Register registers c on reg and returns it, or returns the collector
// already registered under the same description (another step or
// coordinator in the same process shares it). A clash with a foreign
// collector of the same name keeps c unregistered rather than failing the
// caller over metrics. A nil reg registers nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
