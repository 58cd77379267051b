// Package dashboards holds the test of the Grafana dashboards in deploy/grafana/dashboards: it
// builds core-dict, runs it and the simulated directory against the real PostgreSQL, Redis and
// Pulsar, has Debian's Prometheus (scripts/deps.sh up prometheus installs it) scrape them with
// deploy/prometheus.yml, makes traffic, and evaluates every panel's PromQL through Prometheus'
// HTTP API. There is no code here besides the test.
package dashboards
