package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGOnce is the production [ApplyOnce]: a consumer's applied event ids live in the table
// processed_events (schema/00005_processed_events.sql), written in the same transaction as the
// handler's own database work.
//
// For each delivery it begins a transaction, inserts (consumer, event id) unless present, and only if it
// inserted runs the handler with the transaction in its context ([TxFromContext]) and commits. So:
//   - a redelivered or re-published event that was applied finds its row and is acknowledged unapplied;
//   - a handler that fails rolls back its work and the row together, and the redelivery applies it;
//   - two consumer processes that get one event at once serialise on the primary key: the second insert
//     waits for the first transaction, then skips (committed) or applies (rolled back).
//
// Only the handler's work done through the transaction is atomic with the record; anything else it does
// (Redis, HTTP, publishing) must be idempotent itself.
type PGOnce struct {
	pool     *pgxpool.Pool
	consumer string
}

// NewPGOnce returns the applied-once record of the consumer named consumer (a stable name, the same in
// every instance of that consumer: usually its subscription) in pool's database.
func NewPGOnce(pool *pgxpool.Pool, consumer string) *PGOnce {
	return &PGOnce{pool: pool, consumer: consumer}
}

type txKey struct{}

// TxFromContext returns the transaction [PGOnce] runs a handler in, so that the handler's writes commit
// with the record of its event; false outside PGOnce.
func TxFromContext(ctx context.Context) (pgx.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(pgx.Tx)
	return tx, ok
}

// Apply is the [ApplyOnce] of o: pass o.Apply to [WithApplyOnce]. apply finds the transaction with
// [TxFromContext].
func (o *PGOnce) Apply(ctx context.Context, eventID string, apply func(ctx context.Context) error) error {
	return o.ApplyTx(ctx, eventID, func(ctx context.Context, _ pgx.Tx) error { return apply(ctx) })
}

// ApplyTx runs apply in a transaction that records eventID as applied, unless it already is; apply's
// error rolls both back. The transaction is also in apply's ctx ([TxFromContext]). apply must not
// commit or roll back tx.
func (o *PGOnce) ApplyTx(ctx context.Context, eventID string, apply func(ctx context.Context, tx pgx.Tx) error) (err error) {
	if eventID == "" {
		return errors.New("eventbus: apply once: empty event id")
	}
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("eventbus: apply once %s: begin: %w", eventID, err)
	}
	// Rolls back on every path but a commit (also when apply panics); after a commit it does nothing.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	tag, err := tx.Exec(ctx,
		`INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		o.consumer, eventID)
	if err != nil {
		return fmt.Errorf("eventbus: apply once %s: record: %w", eventID, err)
	}
	if tag.RowsAffected() == 0 {
		return nil // applied before (or by the transaction this insert waited for)
	}
	if err := apply(context.WithValue(ctx, txKey{}, tx), tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		// If the commit did happen after all, the redelivery finds the row and skips.
		return fmt.Errorf("eventbus: apply once %s: commit: %w", eventID, err)
	}
	return nil
}

// Applied reports whether eventID is recorded as applied by this consumer.
func (o *PGOnce) Applied(ctx context.Context, eventID string) (bool, error) {
	var ok bool
	err := o.pool.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2)`,
		o.consumer, eventID).Scan(&ok)
	return ok, err
}

// Prune forgets this consumer's events applied before before and returns how many it forgot. Run it
// with a cutoff older than anything the broker can still redeliver (its retention and the longest
// backlog), or a late duplicate would be applied again.
func (o *PGOnce) Prune(ctx context.Context, before time.Time) (int64, error) {
	tag, err := o.pool.Exec(ctx,
		`DELETE FROM processed_events WHERE consumer = $1 AND processed_at < $2`, o.consumer, before)
	if err != nil {
		return 0, fmt.Errorf("eventbus: prune processed events of %s: %w", o.consumer, err)
	}
	return tag.RowsAffected(), nil
}
