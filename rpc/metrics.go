package rpc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the RPC server's Prometheus collectors (README.md, "Metrics"):
//
//   - rpc_server_requests_total{procedure, code}: RPCs handled, by Connect procedure
//     (/dict.v1.CoreDictService/CreateKey) and outcome: "ok" or the Connect code's name
//     (invalid_argument, resource_exhausted, ...). Its rate is the request rate; the codes
//     other than ok are the errors.
//   - rpc_server_duration_seconds{procedure, code}: time to handle an RPC, from the first
//     interceptor to the handler's return, by procedure and outcome, so that refusals (fast)
//     and successes are not averaged together.
//   - rpc_server_in_flight: RPCs being handled now.
//   - rpc_server_panics_total: panics recovered while serving a request.
//
// The label values are bounded: Connect only runs the interceptors for the service's own
// procedures, and the codes are Connect's sixteen plus "ok".
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
	panics   prometheus.Counter
}

// NewMetrics registers the RPC collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rpc_server_requests_total",
			Help: "RPCs handled, by procedure and Connect code (ok for success).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rpc_server_duration_seconds",
			Help:    "Time to handle an RPC, by procedure and Connect code (ok for success).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"procedure", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rpc_server_in_flight",
			Help: "RPCs being handled now.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rpc_server_panics_total",
			Help: "Panics recovered while serving a request (each answered INTERNAL and logged with its stack).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight, m.panics)
	return m
}

// begin counts an RPC in flight; done takes it out and records its outcome.
func (m *Metrics) begin() { m.inflight.Inc() }

func (m *Metrics) done(procedure, code string, elapsed time.Duration) {
	m.inflight.Dec()
	m.requests.WithLabelValues(procedure, code).Inc()
	m.duration.WithLabelValues(procedure, code).Observe(elapsed.Seconds())
}
