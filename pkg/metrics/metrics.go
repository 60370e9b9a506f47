// Package metrics builds the Prometheus registry a troupe process serves on
// /metrics. Components take a prometheus.Registerer and register their own
// troupe_* series on it; this package adds the process and Go runtime
// collectors and the build info series.
package metrics

import (
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
