package testdb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lbpay-lab/core-dict/internal/testdb"
)

var db *testdb.DB

func TestMain(m *testing.M) {
	var err error
	db, err = testdb.Create(context.Background(), "testdb")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	db.Close()
	os.Exit(code)
}

const (
	partA = "12345678"
	partB = "87654321"
	other = "99999999" // a participant this PSP does not serve
)

// rlsTable is one participant-owned table: how to insert a row of a
// participant, and a column an UPDATE can set to itself.
type rlsTable struct {
	name   string
	column string
	insert func(p string) (string, []any)
}

var rlsTables = []rlsTable{
	{"entries", "participant", func(p string) (string, []any) {
		return `INSERT INTO entries (key, key_type, participant, account_number, account_type, account_opened_at,
			owner_type, owner_tax_id, owner_name, status, created_at, key_owned_since, updated_at, request_id,
			cid, cid_w0, cid_w1, cid_w2, cid_w3)
			VALUES ($1, 'EVP', $2, '1', 'CACC', now(), 'NATURAL_PERSON', '12345678901', 'Fulano', 'ACTIVE',
			now(), now(), now(), $3, repeat('0', 64), 0, 0, 0, 0)`, []any{uuid.NewString(), p, uuid.New()}
	}},
	{"claims", "claimer_participant", func(p string) (string, []any) {
		return `INSERT INTO claims (id, claim_type, status, key_type, key, claimer_participant, donor_participant,
			resolution_period_end, completion_period_end, created_at, updated_at)
			VALUES ($1, 'PORTABILITY', 'OPEN', 'EVP', $2, $3, $4, now(), now(), now(), now())`,
			[]any{uuid.New(), uuid.NewString(), p, other}
	}},
	{"requests", "participant", func(p string) (string, []any) {
		return `INSERT INTO requests (request_id, participant, operation, fingerprint) VALUES ($1, $2, 'CreateKey', '\x00')`,
			[]any{uuid.New(), p}
	}},
	{"audit_log", "participant", func(p string) (string, []any) {
		return `INSERT INTO audit_log (at, participant, actor, action, key) VALUES (now(), $1, 'test', 'CreateKey', $2)`,
			[]any{p, uuid.NewString()}
	}},
	{"outbox", "participant", func(p string) (string, []any) {
		return `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id,
			participant, content_type, payload) VALUES ($1, now(), 'persistent://t/n/rls', $2, 'KeyCreated', 'Entry', $2, $3,
			'application/x-protobuf', '\x00')`, []any{uuid.New(), uuid.NewString(), p}
	}},
	{"sync_checks", "participant", func(p string) (string, []any) {
		return `INSERT INTO sync_checks (participant, key_type, checked_at, local_vsync, dict_vsync, result)
			VALUES ($1, 'EVP', now(), '0', '0', 'MATCH')`, []any{p}
	}},
	{"sync_schedule", "participant", func(p string) (string, []any) {
		return `INSERT INTO sync_schedule (participant, key_type, next_check_at) VALUES ($1, $2, now())`,
			[]any{p, uuid.NewString()}
	}},
}

// seed inserts, as the owner, n rows of each participant into every
// participant-owned table, and a claim whose donor (not claimer) is A.
func seed(t *testing.T, ctx context.Context, n int, participants ...string) {
	t.Helper()
	for _, tb := range rlsTables {
		for _, p := range participants {
			for i := 0; i < n; i++ {
				sql, args := tb.insert(p)
				if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
					t.Fatalf("seed %s: %v", tb.name, err)
				}
			}
		}
	}
}

func wantRLSViolation(t *testing.T, err error, what string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("%s: err = %v, want a row-level security violation (42501)", what, err)
	}
}

// inTx runs fn in a transaction on conn that is always rolled back, so the
// test's changes never reach the other tests.
func inTx(t *testing.T, ctx context.Context, conn *pgxpool.Conn, set *string, fn func(tx pgx.Tx)) {
	t.Helper()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if set != nil {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.participants', $1, true)", *set); err != nil {
			t.Fatal(err)
		}
	}
	fn(tx)
}

// count runs a statement in a savepoint so that a failing one does not end
// the transaction.
func count(t *testing.T, ctx context.Context, tx pgx.Tx, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func exec(ctx context.Context, tx pgx.Tx, sql string, args ...any) (int64, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	tag, err := sp.Exec(ctx, sql, args...)
	if err != nil {
		_ = sp.Rollback(ctx)
		return 0, err
	}
	return tag.RowsAffected(), sp.Commit(ctx)
}

// TestRowLevelSecurity: as the service's role, a transaction that did not
// set its participant set sees and changes no row of any participant-owned
// table, and cannot insert one; one that set participant A sees, changes
// and inserts only A's rows, never B's; the setting ends with the
// transaction.
func TestRowLevelSecurity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seed(t, ctx, 2, partA, partB)
	conn, err := db.App.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()

	for _, set := range []*string{nil, ptr(""), ptr(" "), ptr("11111111"), ptr(partA + "x," + partB + " ")} {
		name := "unset"
		if set != nil {
			name = fmt.Sprintf("set to %q", *set)
		}
		t.Run(name, func(t *testing.T) {
			for _, tb := range rlsTables {
				inTx(t, ctx, conn, set, func(tx pgx.Tx) {
					if n := count(t, ctx, tx, "SELECT count(*) FROM "+tb.name); n != 0 {
						t.Errorf("%s: sees %d rows, want 0", tb.name, n)
					}
					if n, err := exec(ctx, tx, "UPDATE "+tb.name+" SET "+tb.column+" = "+tb.column); err != nil || n != 0 {
						t.Errorf("%s: UPDATE changed %d rows (err %v), want 0", tb.name, n, err)
					}
					if n, err := exec(ctx, tx, "DELETE FROM "+tb.name); err != nil || n != 0 {
						t.Errorf("%s: DELETE removed %d rows (err %v), want 0", tb.name, n, err)
					}
					for _, p := range []string{partA, partB} {
						sql, args := tb.insert(p)
						_, err := exec(ctx, tx, sql, args...)
						wantRLSViolation(t, err, tb.name+": INSERT of "+p)
					}
				})
			}
		})
	}

	t.Run("set to A", func(t *testing.T) {
		for _, tb := range rlsTables {
			inTx(t, ctx, conn, ptr(partA), func(tx pgx.Tx) {
				all := count(t, ctx, tx, "SELECT count(*) FROM "+tb.name)
				if all == 0 {
					t.Errorf("%s: sees none of A's rows", tb.name)
				}
				if n := count(t, ctx, tx, "SELECT count(*) FROM "+tb.name+" WHERE "+tb.column+" <> $1", partA); n != 0 {
					t.Errorf("%s: sees %d rows of other participants", tb.name, n)
				}
				if n, err := exec(ctx, tx, "UPDATE "+tb.name+" SET "+tb.column+" = "+tb.column+" WHERE "+tb.column+" = $1", partB); err != nil || n != 0 {
					t.Errorf("%s: UPDATE of B's rows changed %d (err %v), want 0", tb.name, n, err)
				}
				if n, err := exec(ctx, tx, "DELETE FROM "+tb.name+" WHERE "+tb.column+" = $1", partB); err != nil || n != 0 {
					t.Errorf("%s: DELETE of B's rows removed %d (err %v), want 0", tb.name, n, err)
				}
				// Moving one of A's rows to B is a write B's set would see: refused.
				_, err := exec(ctx, tx, "UPDATE "+tb.name+" SET "+tb.column+" = $1", partB)
				wantRLSViolation(t, err, tb.name+": UPDATE of A's rows to B")
				sql, args := tb.insert(partB)
				_, err = exec(ctx, tx, sql, args...)
				wantRLSViolation(t, err, tb.name+": INSERT of B's row")
				sql, args = tb.insert(partA)
				if _, err := exec(ctx, tx, sql, args...); err != nil {
					t.Errorf("%s: INSERT of A's row: %v", tb.name, err)
				}
				if n, err := exec(ctx, tx, "DELETE FROM "+tb.name); err != nil || n != all+1 {
					t.Errorf("%s: DELETE removed %d rows (err %v), want A's %d", tb.name, n, err, all+1)
				}
			})
		}
		// The setting was local to those transactions.
		inTx(t, ctx, conn, nil, func(tx pgx.Tx) {
			if n := count(t, ctx, tx, "SELECT count(*) FROM entries"); n != 0 {
				t.Errorf("after A's transactions, an unset one sees %d entries", n)
			}
		})
		// Outside any explicit transaction, too.
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM entries").Scan(&n); err != nil || n != 0 {
			t.Errorf("a statement outside a transaction sees %d entries (err %v), want 0", n, err)
		}
	})

	t.Run("set to A and B", func(t *testing.T) {
		inTx(t, ctx, conn, ptr(partA+","+partB), func(tx pgx.Tx) {
			var a, b int64
			if err := tx.QueryRow(ctx, "SELECT count(*) FILTER (WHERE participant = $1), count(*) FILTER (WHERE participant = $2) FROM entries",
				partA, partB).Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			if a == 0 || b == 0 {
				t.Errorf("A and B's set sees %d of A's and %d of B's entries, want both", a, b)
			}
		})
	})

	t.Run("claim seen by its donor", func(t *testing.T) {
		id := uuid.New()
		if _, err := db.Pool.Exec(ctx, `INSERT INTO claims (id, claim_type, status, key_type, key, claimer_participant,
			donor_participant, resolution_period_end, completion_period_end, created_at, updated_at)
			VALUES ($1, 'OWNERSHIP', 'OPEN', 'EVP', $2, $3, $4, now(), now(), now(), now())`, id, uuid.NewString(), other, partB); err != nil {
			t.Fatal(err)
		}
		for set, want := range map[string]int64{partB: 1, partA: 0} {
			inTx(t, ctx, conn, ptr(set), func(tx pgx.Tx) {
				if n := count(t, ctx, tx, "SELECT count(*) FROM claims WHERE id = $1", id); n != want {
					t.Errorf("set %s sees the claim donated by B %d times, want %d", set, n, want)
				}
			})
		}
	})
}

// TestServiceRoleCannotLeaveRLS: the service's role owns nothing, so it
// can neither switch row-level security off nor get around it.
func TestServiceRoleCannotLeaveRLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var super, bypass, owns bool
	if err := db.App.QueryRow(ctx, `SELECT r.rolsuper, r.rolbypassrls, pg_has_role(current_user, c.relowner, 'USAGE')
		FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = 'public.entries'::regclass`).Scan(&super, &bypass, &owns); err != nil {
		t.Fatal(err)
	}
	if super || bypass || owns {
		t.Fatalf("the service's role: superuser %v, bypassrls %v, owns the tables %v; want none", super, bypass, owns)
	}
	for _, sql := range []string{
		"ALTER TABLE entries DISABLE ROW LEVEL SECURITY",
		"DROP POLICY participant_set ON entries",
		"CREATE TABLE rls_escape (x int)",
	} {
		if _, err := db.App.Exec(ctx, sql); err == nil {
			t.Errorf("%s: allowed to the service's role", sql)
		}
	}
	// row_security = off makes a query that a policy would filter fail,
	// instead of returning every row.
	seed(t, ctx, 1, partA)
	conn, err := db.App.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	inTx(t, ctx, conn, ptr(partA), func(tx pgx.Tx) {
		if _, err := tx.Exec(ctx, "SET LOCAL row_security = off"); err != nil {
			t.Fatal(err)
		}
		_, err := exec(ctx, tx, "SELECT count(*) FROM entries")
		wantRLSViolation(t, err, "row_security = off")
	})
}

// TestEveryParticipantTableHasRLS: every table with a participant column,
// including those later migrations add, has row-level security on and a
// policy, and rlsTables tests each of them.
func TestEveryParticipantTableHasRLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.Pool.Query(ctx, `SELECT c.relname, c.relrowsecurity,
			EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind = 'r'
		  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT a.attisdropped
		              AND a.attname IN ('participant', 'claimer_participant', 'donor_participant'))
		ORDER BY c.relname`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name string
		var on, policy bool
		if err := rows.Scan(&name, &on, &policy); err != nil {
			t.Fatal(err)
		}
		if !on || !policy {
			t.Errorf("%s has a participant column but row-level security %v, a policy %v", name, on, policy)
		}
		got = append(got, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var tested []string
	for _, tb := range rlsTables {
		tested = append(tested, tb.name)
	}
	sort.Strings(tested)
	if strings.Join(got, ",") != strings.Join(tested, ",") {
		t.Errorf("participant-owned tables %v, tested %v", got, tested)
	}
}

func ptr(s string) *string { return &s }
