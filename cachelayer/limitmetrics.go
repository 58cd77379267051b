package cachelayer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The limiters' metrics, under the seed's names, registered on the [prometheus.Registerer] given with
// [WithLimitRegisterer] (never on the global registry):
//
//   - rate_limit_requests_total{limiter, allowed="true|false"}: admission decisions (TokenBucket.Check and
//     Take, SlidingWindow.Allow, RateLimiter.Allow, MultiKeyLimiter.Allow), whether Redis or the in-process
//     fallback made them. Charges, credits, peeks and counts are not requests and are not counted.
//   - rate_limit_fallbacks_total{limiter}: calls answered by the in-process fallback because Redis was
//     unavailable (one per call, so its rate says how much traffic ran on per-instance state).
//   - rate_limit_active_limiters: limiter instances built on this registry. We count instances, not keys:
//     a key count would cost a shared map (a lock on every decision) and would only ever be this
//     instance's share of the keys anyway, since the keys live in Redis.
//
// Several limiters may share one registry: the second registration finds the first one's collectors and
// uses them.

type limitMetrics struct {
	requests  *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	active    prometheus.Gauge
}

// limitCounters are one limiter's children of the metric vectors, resolved once so that a decision costs
// an atomic add and no label lookup. The zero value (no registry) counts nothing.
type limitCounters struct {
	allowed, refused, fallbacks prometheus.Counter
}

func limitMetricsFor(reg prometheus.Registerer) (*limitMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rate_limit_requests_total",
		Help: "Rate limiter admission decisions, by limiter and outcome.",
	}, []string{"limiter", "allowed"})
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rate_limit_fallbacks_total",
		Help: "Rate limiter calls answered by the in-process fallback because Redis was unavailable.",
	}, []string{"limiter"})
	active := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rate_limit_active_limiters",
		Help: "Rate limiter instances built in this process.",
	})
	var err error
	m := &limitMetrics{}
	if m.requests, err = metricsRegister(reg, requests); err != nil {
		return nil, err
	}
	if m.fallbacks, err = metricsRegister(reg, fallbacks); err != nil {
		return nil, err
	}
	if m.active, err = metricsRegister(reg, active); err != nil {
		return nil, err
	}
	return m, nil
}

// countersFor resolves one limiter's counters and counts it as active.
func (m *limitMetrics) countersFor(name string) limitCounters {
	if m == nil {
		return limitCounters{}
	}
	m.active.Inc()
	return limitCounters{
		allowed:   m.requests.WithLabelValues(name, "true"),
		refused:   m.requests.WithLabelValues(name, "false"),
		fallbacks: m.fallbacks.WithLabelValues(name),
	}
}

func (c limitCounters) decided(allowed bool) {
	if c.allowed == nil {
		return
	}
	if allowed {
		c.allowed.Inc()
	} else {
		c.refused.Inc()
	}
}

func (c limitCounters) fellBack() {
	if c.fallbacks != nil {
		c.fallbacks.Inc()
	}
}
