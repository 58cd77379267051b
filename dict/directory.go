package dict

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/sqlc"
)

// Directory is the central DICT, reached over the RSFN, for the reads a
// request waits for (writes go through the outbox and come back as
// responses, see [Service.ApplyDirectoryResponse]).
type Directory interface {
	// Lookup asks the DICT for key; found is false when it has no entry.
	Lookup(ctx context.Context, participant, key, payerID, endToEndID string) (e Entry, found bool, err error)
	// CheckKeys asks the DICT which of keys (1..200, canonical) have an
	// entry.
	CheckKeys(ctx context.Context, participant string, keys []string) (map[string]bool, error)
}

// SyncDirectory is the part of the DICT the reconciliation asks
// ([Service.CheckSync]). It is kept apart from [Directory] so that a
// Directory without it (a test's fake) still serves lookups; the service
// finds it on [ServiceConfig.Directory] by type assertion.
type SyncDirectory interface {
	// VSync is the DICT's VSync of participant's entries of type t and how
	// many entries it covers.
	VSync(ctx context.Context, participant string, t KeyType) (vsync string, entries int64, err error)
	// ListCids is the DICT's copy of participant's entries of type t, each
	// with its CID.
	ListCids(ctx context.Context, participant string, t KeyType) ([]Entry, error)
}

// TxOnce runs apply in a PostgreSQL transaction that also records id as
// applied, unless it already is (then it runs nothing and returns nil).
// eventbus's PGOnce.ApplyTx is the production one.
type TxOnce func(ctx context.Context, id string, apply func(ctx context.Context, tx pgx.Tx) error) error

// DirectoryContentType is the content type of the DirectoryRequests dict
// writes to the outbox.
const DirectoryContentType = "application/x-protobuf"

// EventDirectoryRequest is the event_type of a DirectoryRequest message.
const EventDirectoryRequest = "DirectoryRequest"

// ReasonEntryPendingOperation refuses a write to an entry that is still
// waiting for the directory to confirm an earlier one. It is core-dict's
// own reason, not the DICT's: the DICT never sees the second write.
const ReasonEntryPendingOperation = "EntryPendingOperation"

var errPendingOperation = E(KindPrecondition, ReasonEntryPendingOperation,
	"the entry has a write waiting for the directory (DICT); retry once GetKey shows it ACTIVE")

// DirectoryRefusal turns the directory's refusal (its DICT reason name,
// message and, for RateLimited, when to retry) into an [*Error] of the kind
// the reason implies.
func DirectoryRefusal(reason, msg string, retryAfter time.Duration) *Error {
	if msg == "" {
		msg = "the directory (DICT) refused the request: " + reason
	}
	kind := KindPrecondition
	switch reason {
	case ReasonRateLimited:
		kind = KindRateLimited
	case ReasonEntryNotFound, ReasonClaimKeyNotFound, "NotFound":
		kind = KindNotFound
	case ReasonEntryInvalid, ReasonEntryTaxIDNumberByDifferentOwner, ReasonClaimInvalid, ReasonClaimTypeInconsistent:
		kind = KindInvalid
	case ReasonEntryAlreadyExists, ReasonEntryKeyOwnedByDifferentPerson, ReasonEntryKeyInCustodyOfDifferentParticipant,
		ReasonRequestIDAlreadyUsed, ReasonClaimAlreadyExistsForKey:
		kind = KindConflict
	case ReasonForbidden:
		kind = KindPermissionDenied
	case ReasonUnavailable:
		kind = KindUnavailable
	}
	return &Error{Kind: kind, Reason: reason, Msg: msg, RetryAfter: max(retryAfter, 0)}
}

// requestDirectory writes a DirectoryRequest for key to the outbox in the
// write's transaction, under the outbox row id corr (its correlation id).
func (s *Service) requestDirectory(ctx context.Context, q *sqlc.Queries, c Caller, corr, reqID uuid.UUID, key string, req *dictv1.DirectoryRequest) error {
	now := s.now().UTC()
	req.CorrelationId = corr.String()
	req.Participant = c.Participant
	req.ReplyTo = s.replyTo
	req.SentAt = timestamppb.New(now)
	req.RequestId = reqID.String()
	b, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var tp pgtype.Text
	if s.traceParent != nil {
		if v := s.traceParent(ctx); v != "" {
			tp = pgtype.Text{String: v, Valid: true}
		}
	}
	return q.InsertOutbox(ctx, sqlc.InsertOutboxParams{
		ID: corr, CreatedAt: now, Topic: s.requestTopic, PartitionKey: key, EventType: EventDirectoryRequest,
		AggregateType: "Entry", AggregateID: key, Participant: c.Participant,
		ContentType: DirectoryContentType, Payload: b, Traceparent: tp,
	})
}

// ApplyDirectoryResponse applies the directory's answer to a write this
// service sent: the pending create, update or delete whose request went
// out under resp's correlation id is confirmed (and its domain event
// written to the outbox) or refused (the reason kept on the entry). It is
// applied once per correlation id, in one transaction with its record
// ([ServiceConfig.ResponseOnce]); a response that matches no pending write
// (already applied, or not this service's) changes nothing.
func (s *Service) ApplyDirectoryResponse(ctx context.Context, resp *dictv1.DirectoryResponse) error {
	corr, err := uuid.Parse(resp.GetCorrelationId())
	if err != nil {
		s.logger.WarnContext(ctx, "directory response without a valid correlation id, ignored", "correlation_id", resp.GetCorrelationId())
		return nil
	}
	var touched []string
	err = s.applyOnce(ctx, corr.String(), func(ctx context.Context, q *sqlc.Queries) error {
		touched = nil
		row, err := q.GetEntryByCorrelation(ctx, uuid.NullUUID{UUID: corr, Valid: true})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		touched, err = s.applyResponse(ctx, q, row, resp)
		return err
	})
	if err != nil {
		return dbError("apply directory response", err)
	}
	s.invalidate(ctx, touched)
	return nil
}

// applyResponse applies resp to the pending write of row and returns the
// keys whose cached entries it changed.
func (s *Service) applyResponse(ctx context.Context, q *sqlc.Queries, row sqlc.Entry, resp *dictv1.DirectoryResponse) ([]string, error) {
	before := entryFromRow(row)
	c := Caller{Participant: before.Account.Participant, Subject: "dict"}
	reqID := row.PendingRequestID.UUID
	reason := Reason(0)
	if r, ok := parseReason(row.PendingReason); ok {
		reason = r
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	op := before.PendingOp

	if de := resp.GetError(); de != nil || resp.GetResult() == nil {
		status := EntryStatusActive
		if op == PendingCreate {
			status = EntryStatusFailed
		}
		after := before
		after.Status, after.PendingOp, after.UpdatedAt = status, "", now
		after.FailureReason, after.FailureMessage = de.GetReason(), de.GetMessage()
		if de == nil {
			after.FailureReason, after.FailureMessage = ReasonInternal, "the directory's answer held no result"
		}
		if err := q.RefuseEntry(ctx, sqlc.RefuseEntryParams{Status: status.String(), FailureReason: after.FailureReason,
			FailureMessage: after.FailureMessage, UpdatedAt: now, Key: before.Key}); err != nil {
			return nil, err
		}
		s.logger.InfoContext(ctx, "directory refused a write", "key", MaskForLog(before.Key), "operation", op, "reason", after.FailureReason)
		return []string{before.Key}, s.record(ctx, q, c, titleOp(op)+"Refused", before.Key, reqID, reason, &before, &after)
	}

	switch op {
	case PendingCreate:
		after := before
		if before.KeyType == KeyTypeEVP {
			k, err := NormalizeKey(KeyTypeEVP, resp.GetEntry().GetKey())
			if err != nil {
				return nil, Internal("apply directory response", errors.New("the directory's EVP key is not a lowercase UUID"))
			}
			after.Key = k
		}
		after.Status, after.PendingOp, after.UpdatedAt = EntryStatusActive, "", now
		after.CID = directoryCID(resp.GetEntry().GetCid(), before.RequestID, after)
		if err := s.confirm(ctx, q, before.Key, after); err != nil {
			return nil, err
		}
		if err := s.record(ctx, q, c, "CreateKeyConfirmed", after.Key, reqID, ReasonUnspecified, &before, &after); err != nil {
			return nil, err
		}
		return []string{before.Key, after.Key}, s.emitEntry(ctx, q, c, after, &dictv1.EventEnvelope{EventType: "KeyCreated",
			Payload: &dictv1.EventEnvelope_KeyCreated{KeyCreated: &dictv1.KeyCreated{
				Entry: after.Proto(), RequestId: reqID.String(), CidEvents: []*dictv1.CidEvent{cidAdded(after.CID)}}}})
	case PendingUpdate:
		var change Entry
		if err := json.Unmarshal(row.PendingChange, &change); err != nil {
			return nil, err
		}
		confirmed := before
		confirmed.Status, confirmed.PendingOp = EntryStatusActive, ""
		after := confirmed
		after.Account, after.Owner, after.UpdatedAt = change.Account, change.Owner, now
		after.CID = directoryCID(resp.GetEntry().GetCid(), before.RequestID, after)
		if err := s.confirm(ctx, q, before.Key, after); err != nil {
			return nil, err
		}
		if err := s.record(ctx, q, c, "UpdateKeyConfirmed", after.Key, reqID, reason, &before, &after); err != nil {
			return nil, err
		}
		return []string{after.Key}, s.emitEntry(ctx, q, c, after, &dictv1.EventEnvelope{EventType: "KeyUpdated",
			Payload: &dictv1.EventEnvelope_KeyUpdated{KeyUpdated: &dictv1.KeyUpdated{
				Entry: after.Proto(), RequestId: reqID.String(), Reason: dictv1.Reason(reason),
				CidEvents: []*dictv1.CidEvent{cidRemoved(before.CID), cidAdded(after.CID)}}}})
	case PendingDelete:
		if err := q.DeleteEntry(ctx, before.Key); err != nil {
			return nil, err
		}
		after := before
		after.Status, after.PendingOp, after.UpdatedAt = EntryStatusDeleted, "", now
		if err := s.record(ctx, q, c, "DeleteKeyConfirmed", after.Key, reqID, reason, &before, &after); err != nil {
			return nil, err
		}
		return []string{after.Key}, s.emitEntry(ctx, q, c, after, &dictv1.EventEnvelope{EventType: "KeyDeleted",
			Payload: &dictv1.EventEnvelope_KeyDeleted{KeyDeleted: &dictv1.KeyDeleted{
				Entry: after.Proto(), RequestId: reqID.String(), Reason: dictv1.Reason(reason),
				CidEvents: []*dictv1.CidEvent{cidRemoved(before.CID)}}}})
	}
	return nil, Internal("apply directory response", errors.New("entry pending an unknown operation "+op))
}

// confirm stores after (re-keyed from key when the directory generated
// the key) as the ACTIVE entry, nothing pending.
func (s *Service) confirm(ctx context.Context, q *sqlc.Queries, key string, after Entry) error {
	w, _ := CIDWords(after.CID)
	return q.ConfirmEntry(ctx, sqlc.ConfirmEntryParams{
		NewKey: after.Key, Branch: after.Account.Branch, AccountNumber: after.Account.Number,
		AccountType: after.Account.Type.String(), AccountOpenedAt: after.Account.OpenedAt,
		OwnerName: after.Owner.Name, OwnerTradeName: after.Owner.TradeName, UpdatedAt: after.UpdatedAt,
		Cid: after.CID, CidW0: w[0], CidW1: w[1], CidW2: w[2], CidW3: w[3], Key: key,
	})
}

// directoryCID is the directory's CID of an entry when it sent a valid one,
// else the one computed here (they agree when both follow DOMAIN.md).
func directoryCID(cid string, reqID uuid.UUID, e Entry) string {
	if _, err := CIDWords(cid); err == nil && len(cid) == 64 {
		return cid
	}
	return CID(reqID, e)
}

func parseReason(s string) (Reason, bool) {
	for r := ReasonUserRequested; r <= ReasonDefaultOperation; r++ {
		if r.String() == s {
			return r, true
		}
	}
	return ReasonUnspecified, false
}

func titleOp(op string) string {
	switch op {
	case PendingCreate:
		return "CreateKey"
	case PendingUpdate:
		return "UpdateKey"
	case PendingDelete:
		return "DeleteKey"
	}
	return "Write"
}

func dirAccount(a Account) *dictv1.Account {
	return Entry{Account: a}.Proto().GetAccount()
}

func dirOwner(o Owner) *dictv1.Owner {
	return Entry{Owner: o}.Proto().GetOwner()
}

// ResendPending sends again the DirectoryRequests of writes whose answer
// has not come (a request or its response was lost: a dead-lettered or
// dropped message), at most limit of them, and returns how many it sent. A
// write's request is due once it (and every copy already sent) reached the
// broker more than age ago, age doubling with each copy up to 16 times: a
// request that waited in the outbox (the broker away) has not been waiting
// for the directory, and a directory behind by more than age (catching up
// after an outage) gets a few copies per write, not one every age. See
// queries/entries.sql's StalePendingRequests. The copy carries the same
// correlation and request ids, so the directory answers with its first
// answer (BCB's RequestId rule) and the answer is applied once. Run it
// periodically, on every instance: two instances re-sending one request at
// once cost one duplicate, which the directory and the apply-once record
// absorb.
func (s *Service) ResendPending(ctx context.Context, age time.Duration, limit int) (int, error) {
	now := s.now().UTC()
	// The re-send acts for every participant this instance serves.
	scope := s.workerScope()
	var rows []sqlc.StalePendingRequestsRow
	err := s.read(ctx, scope, func(q *sqlc.Queries) (err error) {
		rows, err = q.StalePendingRequests(ctx, sqlc.StalePendingRequestsParams{AgeSeconds: age.Seconds(), MaxRows: int32(limit)})
		return err
	})
	if err != nil {
		return 0, dbError("resend pending", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	// One transaction for the round's copies: one commit, not one per row.
	if err := s.inTx(ctx, "resend pending", scope, func(q *sqlc.Queries) error {
		for _, r := range rows {
			if err := q.InsertOutbox(ctx, sqlc.InsertOutboxParams{
				ID: uuid.New(), CreatedAt: now, Topic: r.Topic, PartitionKey: r.PartitionKey, EventType: EventDirectoryRequest,
				AggregateType: "Entry", AggregateID: r.AggregateID, Participant: r.Participant,
				ContentType: DirectoryContentType, Payload: r.Payload, Traceparent: r.Traceparent,
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if len(rows) > 0 {
		s.logger.WarnContext(ctx, "directory requests re-sent for writes still pending", "count", len(rows), "after", age.String())
	}
	return len(rows), nil
}
