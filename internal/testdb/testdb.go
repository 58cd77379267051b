// Package testdb gives each test package its own fresh, migrated PostgreSQL
// database on the local server that scripts/deps.sh starts. Tests never
// share a database with another package, and a database is dropped when
// its package's tests end.
//
// A database is migrated by its owner (the server's admin role), and
// offers two pools: [DB.App], as the service's role (coredict_app), which
// row-level security applies to (schema/00010_rls.sql), for everything a
// test runs as the service would; and [DB.Pool], as the owner, exempt
// from it, for tests that read, seed or damage rows behind the service's
// back and for the outbox relay of tests that do not test the relay's own
// participant set ([DB.AppPoolFor] gives that).
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lbpay-lab/core-dict/schema"
)

// AdminURL is the server the test databases are created on, as a role
// that may create databases (it owns them and their tables):
// TEST_DATABASE_URL, else MIGRATE_DATABASE_URL, else the local default of
// scripts/deps.sh. DATABASE_URL is the service's role (see [AppUserinfo]),
// which can create nothing.
func AdminURL() string {
	for _, name := range []string{"TEST_DATABASE_URL", "MIGRATE_DATABASE_URL"} {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return "postgres://coredict:coredict@127.0.0.1:5432/coredict?sslmode=disable"
}

// AppUserinfo is the service's role (row-level security applies to it):
// the user and password of TEST_APP_DATABASE_URL, else of DATABASE_URL
// when it names a role other than [AdminURL]'s, else the local default of
// scripts/deps.sh (coredict_app).
func AppUserinfo() *url.Userinfo {
	admin, _ := url.Parse(AdminURL())
	for _, name := range []string{"TEST_APP_DATABASE_URL", "DATABASE_URL"} {
		u, err := url.Parse(os.Getenv(name))
		if err != nil || u.User == nil || u.User.Username() == "" {
			continue
		}
		if name == "DATABASE_URL" && admin != nil && admin.User != nil && admin.User.Username() == u.User.Username() {
			continue
		}
		return u.User
	}
	return url.UserPassword("coredict_app", "coredict_app")
}

// DB is one fresh database.
type DB struct {
	Name string
	// URL and Pool connect as the database's owner, which row-level
	// security does not apply to: seed, inspect or damage rows with them.
	URL  string
	Pool *pgxpool.Pool
	// AppURL and App connect as the service's role, which sees only the
	// rows of the participant set its transaction sets: give App to
	// dict.ServiceConfig and dictbus.New.
	AppURL string
	App    *pgxpool.Pool
	// admin connects to the server's maintenance database to drop Name.
	admin string
}

// Create makes a new database named prefix_<random>, migrates it with
// core-dict's migrations and opens a pool on it. Call it from TestMain; Close
// drops the database.
func Create(ctx context.Context, prefix string) (*DB, error) {
	return CreateMigrated(ctx, prefix, schema.Migrate)
}

// MigrateFunc brings the database at url to the newest schema of one
// migration set, such as [schema.Migrate] or dictsim.Migrate.
type MigrateFunc func(ctx context.Context, url string, log io.Writer) error

// CreateMigrated is [Create] with another migration set: the simulated
// directory (dictsim) keeps its own database with its own migrations.
func CreateMigrated(ctx context.Context, prefix string, migrate MigrateFunc) (*DB, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	admin := AdminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s does not answer; start it with `scripts/deps.sh up postgres`: %w", redact(admin), err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.ToLower(prefix) + "_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create test database %s: %w", name, err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	db := &DB{Name: name, URL: u.String(), admin: admin}
	if err := migrate(ctx, db.URL, io.Discard); err != nil {
		db.Close()
		return nil, err
	}
	au := *u
	au.User = AppUserinfo()
	db.AppURL = au.String()
	if db.Pool, err = newPool(ctx, db.URL, nil); err == nil {
		db.App, err = newPool(ctx, db.AppURL, nil)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func newPool(ctx context.Context, dsn string, params map[string]string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 40
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// AppPoolFor opens a pool as the service's role whose every session acts
// for participants (app.participants set for the session, not per
// transaction): what core-dict's outbox relay runs on. The caller closes
// it.
func (db *DB) AppPoolFor(ctx context.Context, participants ...string) (*pgxpool.Pool, error) {
	return newPool(ctx, db.AppURL, map[string]string{"app.participants": strings.Join(participants, ",")})
}

// Close closes the pools and drops the database.
func (db *DB) Close() {
	if db.App != nil {
		db.App.Close()
	}
	if db.Pool != nil {
		db.Pool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.Name}.Sanitize()+" WITH (FORCE)")
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "DATABASE_URL"
	}
	return u.Redacted()
}
