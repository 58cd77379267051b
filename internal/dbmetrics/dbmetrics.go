// Package dbmetrics exports what core-dict's PostgreSQL knows as Prometheus metrics: the pgx
// pool's statistics (read from pool.Stat() at each scrape), claims by status and the VSync
// checks' results (read with two small queries, at most once per refresh interval). The names
// and labels are documented in README.md ("Metrics").
package dbmetrics

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultRefresh is how old the claim and VSync figures may be before a scrape reads them again.
const DefaultRefresh = 15 * time.Second

// queryTimeout bounds one refresh: a slow database leaves the previous figures in place.
const queryTimeout = 2 * time.Second

// ClaimStatuses are the claim statuses always exported (0 when there is none), so that a
// dashboard's series exist from the first scrape.
var ClaimStatuses = []string{"PENDING", "OPEN", "WAITING_RESOLUTION", "CONFIRMED", "COMPLETED", "CANCELLED", "FAILED"}

// SyncResults are the results of a VSync check (dict.SyncMatch, SyncMismatch, SyncRepaired).
var SyncResults = []string{"MATCH", "MISMATCH", "REPAIRED"}

// Config is what [New] reads.
type Config struct {
	Pool *pgxpool.Pool
	// Participants bounds the participant label of the VSync metrics to the ISPBs this
	// instance serves.
	Participants []string
	// Refresh is how old the database figures may be (default [DefaultRefresh]).
	Refresh time.Duration
	Logger  *slog.Logger
}

// Collector is a [prometheus.Collector] over one pool and its database.
type Collector struct {
	cfg Config

	acquires, acquireSeconds, canceled, emptyAcquires, emptyWait, newConns, lifetimeDestroys, idleDestroys *prometheus.Desc
	acquired, idle, constructing, total, maxConns                                                          *prometheus.Desc

	claims, syncChecks, syncLast, syncLastAt, syncEntries, queryErrors *prometheus.Desc

	mu      sync.Mutex
	readAt  time.Time
	errs    float64
	claimN  map[string]float64
	checks  map[string]float64
	latest  []syncRow
	logOnce sync.Once
}

type syncRow struct {
	participant, keyType, result string
	at                           time.Time
	entries, dictEntries         int64
}

// New returns the collector; register it on the service's registry.
func New(cfg Config) *Collector {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := prometheus.NewDesc
	return &Collector{
		cfg: cfg,

		acquires:         d("pgxpool_acquires_total", "Connections acquired from the pgx pool.", nil, nil),
		acquireSeconds:   d("pgxpool_acquire_duration_seconds_total", "Total time spent acquiring connections from the pgx pool.", nil, nil),
		canceled:         d("pgxpool_canceled_acquires_total", "Acquires from the pgx pool cancelled by their context.", nil, nil),
		emptyAcquires:    d("pgxpool_empty_acquires_total", "Acquires that waited because the pgx pool had no idle connection.", nil, nil),
		emptyWait:        d("pgxpool_empty_acquire_wait_seconds_total", "Total time acquires waited for a connection because the pgx pool had none idle.", nil, nil),
		newConns:         d("pgxpool_new_connections_total", "Connections the pgx pool opened.", nil, nil),
		lifetimeDestroys: d("pgxpool_max_lifetime_destroys_total", "Connections the pgx pool closed because they reached their maximum lifetime.", nil, nil),
		idleDestroys:     d("pgxpool_max_idle_destroys_total", "Connections the pgx pool closed because they were idle too long.", nil, nil),
		acquired:         d("pgxpool_acquired_connections", "Connections acquired from the pgx pool now (in use).", nil, nil),
		idle:             d("pgxpool_idle_connections", "Idle connections in the pgx pool.", nil, nil),
		constructing:     d("pgxpool_constructing_connections", "Connections the pgx pool is opening now.", nil, nil),
		total:            d("pgxpool_connections", "Open connections in the pgx pool (acquired, idle and being opened).", nil, nil),
		maxConns:         d("pgxpool_max_connections", "The pgx pool's maximum size (DB_MAX_CONNS).", nil, nil),

		claims: d("dict_claims", "Claims of the participants served, by status (read from the database: the same on every instance).",
			[]string{"status"}, nil),
		syncChecks: d("dict_vsync_checks_total", "VSync checks of the participants served, by result (read from the database: every instance's checks, the same on every instance).",
			[]string{"result"}, nil),
		syncLast: d("dict_vsync_last_result", "1 for the result of the latest VSync check of a participant's key type, 0 for the other results.",
			[]string{"participant", "key_type", "result"}, nil),
		syncLastAt: d("dict_vsync_last_check_timestamp_seconds", "When the latest VSync check of a participant's key type ran (Unix time).",
			[]string{"participant", "key_type"}, nil),
		syncEntries: d("dict_vsync_entries", "Entries counted by the latest VSync check of a participant's key type: side=local here, side=dict in the directory.",
			[]string{"participant", "key_type", "side"}, nil),
		queryErrors: d("dict_metrics_query_errors_total", "Refreshes of the database metrics that failed (the previous figures stay).", nil, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquires, c.acquireSeconds, c.canceled, c.emptyAcquires, c.emptyWait, c.newConns,
		c.lifetimeDestroys, c.idleDestroys, c.acquired, c.idle, c.constructing, c.total, c.maxConns,
		c.claims, c.syncChecks, c.syncLast, c.syncLastAt, c.syncEntries, c.queryErrors} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]: the pool's statistics as they are now, the
// database figures as of the last refresh (refreshed first when older than Config.Refresh).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.cfg.Pool.Stat()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.acquireSeconds, s.AcquireDuration().Seconds())
	counter(c.canceled, float64(s.CanceledAcquireCount()))
	counter(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	counter(c.emptyWait, s.EmptyAcquireWaitTime().Seconds())
	counter(c.newConns, float64(s.NewConnsCount()))
	counter(c.lifetimeDestroys, float64(s.MaxLifetimeDestroyCount()))
	counter(c.idleDestroys, float64(s.MaxIdleDestroyCount()))
	gauge(c.acquired, float64(s.AcquiredConns()))
	gauge(c.idle, float64(s.IdleConns()))
	gauge(c.constructing, float64(s.ConstructingConns()))
	gauge(c.total, float64(s.TotalConns()))
	gauge(c.maxConns, float64(s.MaxConns()))

	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.readAt) >= c.cfg.Refresh {
		c.refresh()
	}
	for _, st := range ClaimStatuses {
		gauge(c.claims, c.claimN[st], st)
	}
	for _, r := range SyncResults {
		counter(c.syncChecks, c.checks[r], r)
	}
	for _, r := range c.latest {
		for _, res := range SyncResults {
			v := 0.0
			if res == r.result {
				v = 1
			}
			gauge(c.syncLast, v, r.participant, r.keyType, res)
		}
		gauge(c.syncLastAt, float64(r.at.UnixNano())/1e9, r.participant, r.keyType)
		gauge(c.syncEntries, float64(r.entries), r.participant, r.keyType, "local")
		gauge(c.syncEntries, float64(r.dictEntries), r.participant, r.keyType, "dict")
	}
	counter(c.queryErrors, c.errs)
}

// refresh reads the claim and VSync figures; on an error it keeps the previous ones, counts
// the failure and logs the first.
func (c *Collector) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	c.readAt = time.Now()
	claims, checks, latest, err := c.read(ctx)
	if err != nil {
		c.errs++
		c.logOnce.Do(func() {
			c.cfg.Logger.Warn("database metrics not read; the previous figures are exported (logged once)", "err", err.Error())
		})
		return
	}
	c.claimN, c.checks, c.latest = claims, checks, latest
}

// The claims of the participants served are counted by status in one scan of the claims
// table (a few thousand rows for a PSP; at most once per refresh interval). The VSync figures come from sync_checks, a few
// rows per participant and key type per day, the latest through its (participant, key_type,
// checked_at DESC) index.
const (
	claimsSQL = `SELECT status, count(*) FROM claims
WHERE (is_claimer AND claimer_participant = ANY($1)) OR (is_donor AND donor_participant = ANY($1)) GROUP BY status`
	syncCountsSQL = `SELECT result, count(*) FROM sync_checks WHERE participant = ANY($1) GROUP BY result`
	syncLatestSQL = `SELECT DISTINCT ON (participant, key_type) participant, key_type, result, checked_at, entries, dict_entries
FROM sync_checks WHERE participant = ANY($1) ORDER BY participant, key_type, checked_at DESC`
)

func (c *Collector) read(ctx context.Context) (claims, checks map[string]float64, latest []syncRow, err error) {
	// One read-only transaction acting for the participants this instance serves: row-level
	// security shows it their rows and no others (schema/00010_rls.sql).
	tx, err := c.cfg.Pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, nil, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only; nothing to undo
	if _, err := tx.Exec(ctx, `SELECT set_config('app.participants', $1, true)`, strings.Join(c.cfg.Participants, ",")); err != nil {
		return nil, nil, nil, err
	}
	counts := func(sql string) (map[string]float64, error) {
		rows, err := tx.Query(ctx, sql, c.cfg.Participants)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		m := map[string]float64{}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				return nil, err
			}
			m[k] = float64(n)
		}
		return m, rows.Err()
	}
	if claims, err = counts(claimsSQL); err != nil {
		return nil, nil, nil, err
	}
	if checks, err = counts(syncCountsSQL); err != nil {
		return nil, nil, nil, err
	}
	rows, err := tx.Query(ctx, syncLatestSQL, c.cfg.Participants)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r syncRow
		if err := rows.Scan(&r.participant, &r.keyType, &r.result, &r.at, &r.entries, &r.dictEntries); err != nil {
			return nil, nil, nil, err
		}
		latest = append(latest, r)
	}
	return claims, checks, latest, rows.Err()
}
