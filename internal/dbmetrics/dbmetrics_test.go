package dbmetrics_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lbpay-lab/core-dict/internal/dbmetrics"
	"github.com/lbpay-lab/core-dict/internal/testdb"
)

var db *testdb.DB

func TestMain(m *testing.M) {
	var err error
	db, err = testdb.Create(context.Background(), "dbmetrics")
	if err != nil {
		panic(err)
	}
	code := m.Run()
	db.Close()
	os.Exit(code)
}

// TestCollector reads claims and VSync checks as the service's role, for the participants it
// serves only, and the pool's statistics.
func TestCollector(t *testing.T) {
	ctx := context.Background()
	const served, other = "11110001", "22220002"
	now := time.Now().UTC().Truncate(time.Second)
	claim := func(status, claimer, donor string, isClaimer, isDonor bool) {
		t.Helper()
		_, err := db.Pool.Exec(ctx, `INSERT INTO claims (id, claim_type, status, key_type, key, claimer_participant,
			donor_participant, resolution_period_end, completion_period_end, created_at, updated_at, is_claimer, is_donor)
			VALUES ($1, 'PORTABILITY', $2, 'EMAIL', $3, $4, $5, $6, $6, $6, $6, $7, $8)`,
			uuid.New(), status, uuid.NewString()+"@example.com", claimer, donor, now, isClaimer, isDonor)
		if err != nil {
			t.Fatal(err)
		}
	}
	claim("OPEN", served, other, true, false)
	claim("OPEN", other, served, false, true)
	claim("COMPLETED", served, other, true, false)
	claim("OPEN", other, "33330003", true, false) // another instance's: not counted
	check := func(p, kt, result string, at time.Time, entries int64) {
		t.Helper()
		_, err := db.Pool.Exec(ctx, `INSERT INTO sync_checks (participant, key_type, checked_at, local_vsync, dict_vsync, result,
			entries, dict_entries) VALUES ($1, $2, $3, 'a', 'b', $4, $5, $6)`, p, kt, at, result, entries, entries+1)
		if err != nil {
			t.Fatal(err)
		}
	}
	check(served, "CPF", "MISMATCH", now.Add(-time.Minute), 3)
	check(served, "CPF", "REPAIRED", now, 4)
	check(served, "EMAIL", "MATCH", now, 7)
	check(other, "CPF", "MISMATCH", now, 1)

	c := dbmetrics.New(dbmetrics.Config{Pool: db.App, Participants: []string{served}, Refresh: time.Hour})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	want := `
# HELP dict_claims Claims of the participants served, by status (read from the database: the same on every instance).
# TYPE dict_claims gauge
dict_claims{status="CANCELLED"} 0
dict_claims{status="COMPLETED"} 1
dict_claims{status="CONFIRMED"} 0
dict_claims{status="FAILED"} 0
dict_claims{status="OPEN"} 2
dict_claims{status="PENDING"} 0
dict_claims{status="WAITING_RESOLUTION"} 0
# HELP dict_vsync_checks_total VSync checks of the participants served, by result (read from the database: every instance's checks, the same on every instance).
# TYPE dict_vsync_checks_total counter
dict_vsync_checks_total{result="MATCH"} 1
dict_vsync_checks_total{result="MISMATCH"} 1
dict_vsync_checks_total{result="REPAIRED"} 1
# HELP dict_vsync_last_result 1 for the result of the latest VSync check of a participant's key type, 0 for the other results.
# TYPE dict_vsync_last_result gauge
dict_vsync_last_result{key_type="CPF",participant="11110001",result="MATCH"} 0
dict_vsync_last_result{key_type="CPF",participant="11110001",result="MISMATCH"} 0
dict_vsync_last_result{key_type="CPF",participant="11110001",result="REPAIRED"} 1
dict_vsync_last_result{key_type="EMAIL",participant="11110001",result="MATCH"} 1
dict_vsync_last_result{key_type="EMAIL",participant="11110001",result="MISMATCH"} 0
dict_vsync_last_result{key_type="EMAIL",participant="11110001",result="REPAIRED"} 0
# HELP dict_vsync_entries Entries counted by the latest VSync check of a participant's key type: side=local here, side=dict in the directory.
# TYPE dict_vsync_entries gauge
dict_vsync_entries{key_type="CPF",participant="11110001",side="dict"} 5
dict_vsync_entries{key_type="CPF",participant="11110001",side="local"} 4
dict_vsync_entries{key_type="EMAIL",participant="11110001",side="dict"} 8
dict_vsync_entries{key_type="EMAIL",participant="11110001",side="local"} 7
# HELP dict_metrics_query_errors_total Refreshes of the database metrics that failed (the previous figures stay).
# TYPE dict_metrics_query_errors_total counter
dict_metrics_query_errors_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dict_claims", "dict_vsync_checks_total",
		"dict_vsync_last_result", "dict_vsync_entries", "dict_metrics_query_errors_total"); err != nil {
		t.Error(err)
	}
	if got := valueOf(t, reg, "dict_vsync_last_check_timestamp_seconds", "key_type", "CPF"); got != float64(now.Unix()) {
		t.Errorf("dict_vsync_last_check_timestamp_seconds{CPF} = %v, want %v", got, now.Unix())
	}

	// The figures are kept for Refresh: a new claim is not seen until then.
	claim("WAITING_RESOLUTION", served, other, true, false)
	if n := claimsWith(t, reg, "WAITING_RESOLUTION"); n != 0 {
		t.Errorf("dict_claims{WAITING_RESOLUTION} = %v within the refresh interval, want the cached 0", n)
	}
	fresh := dbmetrics.New(dbmetrics.Config{Pool: db.App, Participants: []string{served}})
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(fresh)
	if n := claimsWith(t, reg2, "WAITING_RESOLUTION"); n != 1 {
		t.Errorf("dict_claims{WAITING_RESOLUTION} = %v on a new collector, want 1", n)
	}
	// The pool's statistics are read at each scrape.
	if n := testutil.CollectAndCount(fresh, "pgxpool_max_connections", "pgxpool_acquires_total", "pgxpool_connections"); n != 3 {
		t.Errorf("pool metrics: %d series, want 3", n)
	}
	if err := testutil.CollectAndCompare(fresh, strings.NewReader(`
# HELP pgxpool_max_connections The pgx pool's maximum size (DB_MAX_CONNS).
# TYPE pgxpool_max_connections gauge
pgxpool_max_connections `+strconv.Itoa(int(db.App.Stat().MaxConns()))+`
`), "pgxpool_max_connections"); err != nil {
		t.Error(err)
	}
	// Lint: what promtool would say of these names.
	if problems, err := testutil.GatherAndLint(reg2); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestCollectorKeepsFiguresOnError: a failed read keeps the previous figures and counts the error.
func TestCollectorKeepsFiguresOnError(t *testing.T) {
	ctx := context.Background()
	pool, err := db.AppPoolFor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := dbmetrics.New(dbmetrics.Config{Pool: pool, Participants: []string{"44440004"}, Refresh: time.Nanosecond})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	pool.Close() // every later read fails
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "dict_metrics_query_errors_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v < 1 {
				t.Errorf("dict_metrics_query_errors_total = %v after a failed read, want at least 1", v)
			}
			return
		}
	}
	t.Error("dict_metrics_query_errors_total not exported")
}

func claimsWith(t *testing.T, reg *prometheus.Registry, status string) float64 {
	t.Helper()
	return valueOf(t, reg, "dict_claims", "status", status)
}

// valueOf is the value of the gauge or counter name whose label has value.
func valueOf(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{%s=%q} not exported", name, label, value)
	return 0
}
