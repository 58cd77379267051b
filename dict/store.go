package dict

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lbpay-lab/core-dict/sqlc"
)

// Row-level security (schema/00010_rls.sql): the service's database role
// sees and changes only the rows of the participant set its transaction
// declares, so every statement runs in a transaction that begins by
// declaring it (SET LOCAL app.participants), with one of two scopes:
//   - a request's: its caller's participant, [only];
//   - work that spans the participants this instance serves (claim
//     deadlines, the directory's responses and notices, re-sends,
//     reconciliation): [Service.workerScope], the configured set
//     ([ServiceConfig.Participants]), never more.
// A statement run outside these helpers sees no participant's rows.

// only is the participant set of a request: its caller's participant.
func only(c Caller) []string { return []string{c.Participant} }

// workerScope is the participant set of work that spans participants: the
// ones this instance serves, plus any named.
func (s *Service) workerScope(extra ...string) []string {
	if len(extra) == 0 {
		return s.participants
	}
	return append(append([]string(nil), s.participants...), extra...)
}

// beginSQL begins a transaction and sets its participant set, in one round
// trip (simple protocol). Only ISPBs (8 digits) are kept, so the set is
// always a safe literal; one without any sees no rows.
func beginSQL(participants []string, readOnly bool) string {
	var b strings.Builder
	b.WriteString("BEGIN")
	if readOnly {
		b.WriteString(" READ ONLY")
	}
	b.WriteString("; SELECT set_config('app.participants', '")
	n := 0
	for _, p := range participants {
		if !IsISPB(p) {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p)
		n++
	}
	b.WriteString("', true)")
	return b.String()
}

// setParticipants declares the participant set of a transaction begun
// elsewhere ([ServiceConfig.ResponseOnce]'s).
func setParticipants(ctx context.Context, tx pgx.Tx, participants []string) error {
	keep := make([]string, 0, len(participants))
	for _, p := range participants {
		if IsISPB(p) {
			keep = append(keep, p)
		}
	}
	_, err := tx.Exec(ctx, "SELECT set_config('app.participants', $1, true)", strings.Join(keep, ","))
	return err
}

// inTx runs fn in one PostgreSQL transaction acting for participants:
// committed when fn returns nil, rolled back otherwise. Every use case that
// changes state is one call.
func (s *Service) inTx(ctx context.Context, op string, participants []string, fn func(q *sqlc.Queries) error) error {
	err := s.tx(ctx, participants, false, func(tx pgx.Tx) error { return fn(s.q.WithTx(tx)) })
	if err == nil {
		return nil
	}
	var de *Error
	if errors.As(err, &de) {
		return err
	}
	return dbError(op, err)
}

// read runs fn's reads in one read-only transaction acting for
// participants and returns fn's error as it is (pgx.ErrNoRows included).
func (s *Service) read(ctx context.Context, participants []string, fn func(q *sqlc.Queries) error) error {
	return s.tx(ctx, participants, true, func(tx pgx.Tx) error { return fn(s.q.WithTx(tx)) })
}

func (s *Service) tx(ctx context.Context, participants []string, readOnly bool, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{BeginQuery: beginSQL(participants, readOnly)}, fn)
}

// keyHolder tells, for a key whose entry the caller's participant set
// cannot see, whether it is held within that set and whether by the owner
// with taxID (schema/00010_rls.sql's entry_holder: nothing else of it);
// ok is false when no entry holds the key.
func (s *Service) keyHolder(ctx context.Context, participants []string, key, taxID string) (inSet, sameOwner, ok bool, err error) {
	err = s.tx(ctx, participants, true, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT in_participant_set, same_owner FROM entry_holder($1, $2)", key, taxID).Scan(&inSet, &sameOwner)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, false, nil
	}
	return inSet, sameOwner, err == nil, err
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
