package dict

import (
	"context"
	"errors"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lbpay-lab/core-dict/sqlc"
)

// inTx runs fn in one PostgreSQL transaction: committed when fn returns nil,
// rolled back otherwise. Every use case that changes state is one call.
func (s *Service) inTx(ctx context.Context, op string, fn func(q *sqlc.Queries) error) error {
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		return fn(s.q.WithTx(tx))
	})
	if err == nil {
		return nil
	}
	var de *Error
	if errors.As(err, &de) {
		return err
	}
	return dbError(op, err)
}

// dbError classifies a database failure: the database being unreachable is
// Unavailable (the caller may retry), anything else Internal. The cause is
// kept for logs and never shown to clients.
func dbError(op string, err error) error {
	var de *Error
	if errors.As(err, &de) {
		return err
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Kind: KindUnavailable, Reason: ReasonUnavailable, Msg: op + " did not finish in time", Err: err}
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.SafeToRetry(err):
		return &Error{Kind: KindUnavailable, Reason: ReasonUnavailable, Msg: "the database is unavailable; retry later", Err: err}
	}
	return Internal(op, err)
}

// isUniqueViolation reports whether err is PostgreSQL's unique_violation on
// the named constraint ("" for any).
func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (constraint == "" || pe.ConstraintName == constraint)
}

// Ping reports whether the database answers; /readyz uses it.
func (s *Service) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// entryFromRow converts a stored row to an [Entry].
func entryFromRow(r sqlc.Entry) Entry {
	kt, _ := ParseKeyType(r.KeyType)
	at, _ := ParseAccountType(r.AccountType)
	ot, _ := ParseOwnerType(r.OwnerType)
	st, _ := ParseEntryStatus(r.Status)
	return Entry{
		KeyType: kt,
		Key:     r.Key,
		Account: Account{
			Participant: r.Participant,
			Branch:      r.Branch,
			Number:      r.AccountNumber,
			Type:        at,
			OpenedAt:    r.AccountOpenedAt.UTC(),
		},
		Owner: Owner{
			Type:      ot,
			TaxID:     r.OwnerTaxID,
			Name:      r.OwnerName,
			TradeName: r.OwnerTradeName,
		},
		Status:         st,
		CreatedAt:      r.CreatedAt.UTC(),
		KeyOwnedSince:  r.KeyOwnedSince.UTC(),
		UpdatedAt:      r.UpdatedAt.UTC(),
		CID:            r.Cid,
		RequestID:      r.RequestID,
		PendingOp:      r.PendingOp.String,
		FailureReason:  r.FailureReason,
		FailureMessage: r.FailureMessage,
	}
}

func entriesFromRows(rows []sqlc.Entry) []Entry {
	out := make([]Entry, len(rows))
	for i, r := range rows {
		out[i] = entryFromRow(r)
	}
	return out
}
