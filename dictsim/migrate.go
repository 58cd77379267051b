package dictsim

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io"
	"io/fs"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for goose
	"github.com/pressly/goose/v3"
)

//go:embed schema/*.sql
var migrations embed.FS

// Migrate brings the simulator's database at url to the newest schema
// (dictsim/schema, goose format), writing one line per applied migration to
// log. It never touches core-dict's own schema: the simulator keeps its own
// database.
func Migrate(ctx context.Context, url string, log io.Writer) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	sub, err := fs.Sub(migrations, "schema")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub)
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
