// Package testdb gives each test package its own fresh, migrated PostgreSQL
// database on the local server that scripts/deps.sh starts. Tests never
// share a database with another package, and a database is dropped when
// its package's tests end.
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

// AdminURL is the server the test databases are created on: TEST_DATABASE_URL,
// else DATABASE_URL, else the local default of scripts/deps.sh.
func AdminURL() string {
	for _, name := range []string{"TEST_DATABASE_URL", "DATABASE_URL"} {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return "postgres://coredict:coredict@127.0.0.1:5432/coredict?sslmode=disable"
}

// DB is one fresh database.
type DB struct {
	Name string
	URL  string
	Pool *pgxpool.Pool
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
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		db.Close()
		return nil, err
	}
	cfg.MaxConns = 40
	db.Pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the pool and drops the database.
func (db *DB) Close() {
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
