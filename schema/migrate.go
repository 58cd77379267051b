package schema

import (
	"context"
	"database/sql"
	"fmt"
	"io"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for goose
	"github.com/pressly/goose/v3"
)

// Migrate brings the database at url to the newest schema, writing one line
// per applied migration to log. Several instances may run it at once: goose
// serialises them with a session lock.
func Migrate(ctx context.Context, url string, log io.Writer) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range res {
		fmt.Fprintf(log, "migrated %s (%s)\n", r.Source.Path, r.Duration.Round(1e6))
	}
	return nil
}
