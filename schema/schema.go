// Package schema holds core-dict's numbered PostgreSQL migrations (goose
// format). They are embedded in the binary and applied by `core-dict
// migrate`; sqlc reads the same files to type-check queries/.
package schema

import "embed"

// Migrations is the set of migration files, named NNNNN_name.sql.
//
//go:embed *.sql
var Migrations embed.FS
