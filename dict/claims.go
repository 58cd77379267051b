package dict

import (
	"context"
	"encoding/base64"
	"encoding/binary"
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

// The claim use cases. The DICT decides every claim: this PSP checks an
// action with [ClaimTransition] first (so a refusal is immediate and names
// the DICT's reason), then keeps it pending with a DirectoryRequest in the
// outbox, in one transaction; the directory's response applies the new
// status and its effects on the entries ([Service.ApplyClaimResponse]).
// What the other side does reaches this PSP as DirectoryNotices
// ([Service.ApplyDirectoryNotice]).

// Stored statuses of a claim this PSP created and the directory has not
// accepted yet, or refused. They have no counterpart in dict.v1.ClaimStatus.
const (
	claimStatusPending = "PENDING"
	claimStatusFailed  = "FAILED"
)

// PendingClaimCreate is the pending operation of a claim created here that
// waits for the directory's id.
const PendingClaimCreate = "CREATE"

// ReasonClaimPendingOperation refuses an action on a claim that still
// waits for the directory's answer to an earlier one. It is core-dict's own
// reason, not the DICT's: the DICT never sees the second action.
const ReasonClaimPendingOperation = "ClaimPendingOperation"

// Claim is a claim as this PSP knows it.
type Claim struct {
	ID                  uuid.UUID
	Type                ClaimType
	Status              ClaimStatus // Unspecified while a create is pending, or after the directory refused it
	KeyType             KeyType
	Key                 string
	ClaimerAccount      Account
	Claimer             Owner
	ClaimerParticipant  string
	DonorParticipant    string
	ResolutionPeriodEnd time.Time
	CompletionPeriodEnd time.Time
	CreatedAt           time.Time
	UpdatedAt           time.Time
	CancelReason        Reason
	ConfirmReason       Reason
	// PendingOp is the action waiting for the directory: CREATE, or an
	// action's name (ACKNOWLEDGE, ...); "" when none.
	PendingOp      string `json:",omitempty"`
	FailureReason  string `json:",omitempty"`
	FailureMessage string `json:",omitempty"`
	// IsClaimer and IsDonor say which sides are local participants.
	IsClaimer bool
	IsDonor   bool
}

// Side is the part participant plays in c.
func (c Claim) Side(participant string) ClaimSide {
	switch {
	case c.IsClaimer && c.ClaimerParticipant == participant:
		return ClaimSideClaimer
	case c.IsDonor && c.DonorParticipant == participant:
		return ClaimSideDonor
	}
	return ClaimSideNone
}

// Proto returns the claim as its contract message.
func (c Claim) Proto() *dictv1.Claim {
	return &dictv1.Claim{
		Id: c.ID.String(), Type: dictv1.ClaimType(c.Type), Status: dictv1.ClaimStatus(c.Status),
		KeyType: dictv1.KeyType(c.KeyType), Key: c.Key,
		ClaimerAccount:      dirAccount(c.ClaimerAccount),
		Claimer:             dirOwner(c.Claimer),
		DonorParticipant:    c.DonorParticipant,
		ResolutionPeriodEnd: protoTime(c.ResolutionPeriodEnd), CompletionPeriodEnd: protoTime(c.CompletionPeriodEnd),
		CreatedAt: protoTime(c.CreatedAt), UpdatedAt: protoTime(c.UpdatedAt),
		CancelReason:     dictv1.Reason(c.CancelReason),
		FailureReason:    c.FailureReason,
		FailureMessage:   c.FailureMessage,
		PendingOperation: c.PendingOp,
	}
}

func claimFromRow(r sqlc.Claim) Claim {
	c := Claim{
		ID: r.ID, Key: r.Key, ClaimerParticipant: r.ClaimerParticipant, DonorParticipant: r.DonorParticipant,
		ResolutionPeriodEnd: r.ResolutionPeriodEnd.UTC(), CompletionPeriodEnd: r.CompletionPeriodEnd.UTC(),
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
		PendingOp: r.PendingAction.String, FailureReason: r.FailureReason, FailureMessage: r.FailureMessage,
		IsClaimer: r.IsClaimer, IsDonor: r.IsDonor,
	}
	c.Type, _ = ParseClaimType(r.ClaimType)
	c.Status, _ = ParseClaimStatus(r.Status) // PENDING and FAILED read as Unspecified
	c.KeyType, _ = ParseKeyType(r.KeyType)
	c.CancelReason, _ = parseReason(r.CancelReason)
	c.ConfirmReason, _ = parseReason(r.ConfirmReason)
	_ = json.Unmarshal(r.ClaimerAccount, &c.ClaimerAccount)
	_ = json.Unmarshal(r.ClaimerOwner, &c.Claimer)
	return c
}

func (c Claim) state() ClaimState {
	return ClaimState{Type: c.Type, Status: c.Status, CreatedAt: c.CreatedAt,
		ResolutionPeriodEnd: c.ResolutionPeriodEnd, CompletionPeriodEnd: c.CompletionPeriodEnd}
}

var errNoClaim = E(KindNotFound, ReasonClaimNotFound, "no claim with this id that the caller's participant takes part in")

func parseClaimID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 || id == uuid.Nil {
		return uuid.Nil, &Error{Kind: KindInvalid, Reason: ReasonClaimInvalid, Field: "id", Msg: "id must be the claim's UUID"}
	}
	return id, nil
}

// CreateClaimInput is a request to open a claim, this PSP as claimer.
type CreateClaimInput struct {
	RequestID      string
	Type           ClaimType
	KeyType        KeyType
	Key            string
	ClaimerAccount Account
	Claimer        Owner
}

// CreateClaim opens a portability or ownership claim over a key held by
// another participant, for an account of the caller's participant: the
// claim is stored pending under its request id, with a create_claim
// DirectoryRequest in the outbox. The directory's response gives it the
// directory's id, status OPEN and its periods, or refuses it (the reason in
// FailureReason). GetClaim finds it by the request id as well.
func (s *Service) CreateClaim(ctx context.Context, c Caller, in CreateClaimInput) (Claim, error) {
	reqID, err := parseRequestID(in.RequestID)
	if err != nil {
		return Claim{}, err
	}
	if in.Type != ClaimTypePortability && in.Type != ClaimTypeOwnership {
		return Claim{}, &Error{Kind: KindInvalid, Reason: ReasonClaimInvalid, Field: "type", Msg: "type must be PORTABILITY or OWNERSHIP"}
	}
	if in.KeyType == KeyTypeUnspecified {
		return Claim{}, &Error{Kind: KindInvalid, Reason: ReasonClaimInvalid, Field: "key_type", Msg: "key_type is required: CPF, CNPJ, PHONE or EMAIL"}
	}
	// Only which key types fit which claim can be told here; who owns the
	// key is the directory's to check.
	if err := CheckClaimType(in.Type, in.KeyType, in.Type == ClaimTypePortability); err != nil {
		return Claim{}, err
	}
	if in.ClaimerAccount.Participant == "" {
		in.ClaimerAccount.Participant = c.Participant
	}
	var v violations
	key, kerr := NormalizeKey(in.KeyType, in.Key)
	v.addError(kerr)
	acc, aerr := in.ClaimerAccount.Normalize()
	v.addError(aerr)
	owner, oerr := in.Claimer.Normalize()
	v.addError(oerr)
	if err := v.err(); err != nil {
		return Claim{}, err
	}
	if acc.Participant != c.Participant {
		return Claim{}, &Error{Kind: KindPermissionDenied, Reason: ReasonForbidden, Field: "claimer_account.participant",
			Msg: "claimer_account.participant must be the participant the caller acts for"}
	}
	if err := checkKeyOwner(Entry{KeyType: in.KeyType, Key: key, Owner: owner}); err != nil {
		return Claim{}, err
	}
	fp := fingerprint("CreateClaim", c.Participant, struct {
		Type    ClaimType
		Key     string
		Account Account
		Owner   Owner
	}{in.Type, key, acc, owner})

	now := s.now().UTC().Truncate(time.Microsecond)
	resEnd, compEnd := ClaimPeriods(in.Type, now)
	cl := Claim{
		ID: reqID, Type: in.Type, KeyType: in.KeyType, Key: key, ClaimerAccount: acc, Claimer: owner,
		ClaimerParticipant: c.Participant, ResolutionPeriodEnd: resEnd, CompletionPeriodEnd: compEnd,
		CreatedAt: now, UpdatedAt: now, PendingOp: PendingClaimCreate, IsClaimer: true,
	}
	corr := uuid.New()
	var out Claim
	err = s.inTx(ctx, "create claim", only(c), func(q *sqlc.Queries) error {
		if prior, done, err := s.claimRequestOnce(ctx, q, reqID, c.Participant, "CreateClaim", fp); err != nil || done {
			out = prior
			return err
		}
		if row, err := q.GetEntry(ctx, key); err == nil && row.Participant == c.Participant && row.Status != EntryStatusFailed.String() {
			return E(KindPrecondition, ReasonClaimInvalid, "the key is already held by the caller's participant")
		} else if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if _, err := q.ClaimHoldingKey(ctx, key); err == nil {
			return E(KindConflict, ReasonClaimAlreadyExistsForKey, "the key already has an open claim")
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err := q.LockAccount(ctx, lockAccountParams(acc)); err != nil {
			return err
		}
		n, err := q.CountAccountEntries(ctx, countAccountParams(acc))
		if err != nil {
			return err
		}
		if limit := MaxKeysPerAccount(owner.Type); n >= int64(limit) {
			return E(KindPrecondition, ReasonEntryLimitExceeded,
				"the account already holds %d keys, the most a %s may have on one account", n, ownerWord(owner.Type))
		}
		accJSON, _ := json.Marshal(acc)
		ownerJSON, _ := json.Marshal(owner)
		if err := q.InsertClaim(ctx, sqlc.InsertClaimParams{
			ID: reqID, ClaimType: in.Type.String(), Status: claimStatusPending, KeyType: in.KeyType.String(), Key: key,
			ClaimerParticipant: c.Participant, ResolutionPeriodEnd: resEnd, CompletionPeriodEnd: compEnd,
			CreatedAt: now, UpdatedAt: now, IsClaimer: true, ClaimerAccount: accJSON, ClaimerOwner: ownerJSON,
			CreateRequestID: uuid.NullUUID{UUID: reqID, Valid: true},
			PendingAction:   pgtype.Text{String: PendingClaimCreate, Valid: true}, PendingParticipant: c.Participant,
			PendingCorrelation: uuid.NullUUID{UUID: corr, Valid: true}, PendingRequestID: uuid.NullUUID{UUID: reqID, Valid: true},
		}); err != nil {
			if isUniqueViolation(err, "claims_one_open_per_key") {
				return E(KindConflict, ReasonClaimAlreadyExistsForKey, "the key already has an open claim")
			}
			return err
		}
		if err := s.recordClaim(ctx, q, c, "CreateClaim", reqID, ReasonUnspecified, nil, &cl); err != nil {
			return err
		}
		if err := s.requestDirectory(ctx, q, c, corr, reqID, key, &dictv1.DirectoryRequest{
			Operation: &dictv1.DirectoryRequest_CreateClaim{CreateClaim: &dictv1.DirCreateClaim{
				Type: dictv1.ClaimType(in.Type), KeyType: dictv1.KeyType(in.KeyType), Key: key,
				ClaimerAccount: dirAccount(acc), Claimer: dirOwner(owner)}}}); err != nil {
			return err
		}
		out = cl
		return s.answerClaimRequest(ctx, q, reqID, cl)
	})
	if err != nil {
		return Claim{}, err
	}
	s.logger.InfoContext(ctx, "claim create sent to the directory", "key", MaskForLog(key), "type", in.Type.String(), "participant", c.Participant)
	return out, nil
}

// GetClaim returns a claim the caller's participant takes part in, by the
// directory's id or, for a claim created here, by the create's request id.
func (s *Service) GetClaim(ctx context.Context, c Caller, idStr string) (Claim, error) {
	id, err := parseClaimID(idStr)
	if err != nil {
		return Claim{}, err
	}
	var row sqlc.Claim
	err = s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
		row, err = q.GetClaim(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			row, err = q.GetClaimByCreateRequest(ctx, uuid.NullUUID{UUID: id, Valid: true})
		}
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, errNoClaim
	}
	if err != nil {
		return Claim{}, dbError("get claim", err)
	}
	cl := claimFromRow(row)
	if cl.Side(c.Participant) == ClaimSideNone {
		return Claim{}, errNoClaim
	}
	return cl, nil
}

// ListClaimsInput filters and pages ListClaims. With neither AsDonor nor
// AsClaimer, both sides are listed.
type ListClaimsInput struct {
	AsDonor   bool
	AsClaimer bool
	Statuses  []ClaimStatus
	PageSize  int
	PageToken string
}

// ListClaims lists the claims the caller's participant takes part in,
// newest first.
func (s *Service) ListClaims(ctx context.Context, c Caller, in ListClaimsInput) ([]Claim, string, error) {
	size := in.PageSize
	switch {
	case size < 0 || size > MaxPageSize:
		return nil, "", &Error{Kind: KindInvalid, Reason: ReasonClaimInvalid, Field: "page_size", Msg: "page_size must be between 0 and 500"}
	case size == 0:
		size = DefaultPageSize
	}
	p := sqlc.ListClaimsParams{AsClaimer: in.AsClaimer, AsDonor: in.AsDonor, Participant: c.Participant,
		Statuses: []string{}, AfterCreated: time.Unix(0, 0), PageLimit: int32(size + 1)}
	if !in.AsClaimer && !in.AsDonor {
		p.AsClaimer, p.AsDonor = true, true
	}
	for _, st := range in.Statuses {
		if st < ClaimStatusOpen || st > ClaimStatusCompleted {
			return nil, "", &Error{Kind: KindInvalid, Reason: ReasonClaimInvalid, Field: "statuses", Msg: "statuses must be OPEN, WAITING_RESOLUTION, CONFIRMED, CANCELLED or COMPLETED"}
		}
		p.Statuses = append(p.Statuses, st.String())
	}
	if in.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.PageToken)
		if err != nil || len(b) != 24 {
			return nil, "", &Error{Kind: KindInvalid, Reason: ReasonClaimInvalid, Field: "page_token", Msg: "page_token is not one this service issued"}
		}
		p.Paged = true
		p.AfterCreated = time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))).UTC()
		p.AfterID, _ = uuid.FromBytes(b[8:])
	}
	var rows []sqlc.Claim
	err := s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
		rows, err = q.ListClaims(ctx, p)
		return err
	})
	if err != nil {
		return nil, "", dbError("list claims", err)
	}
	next := ""
	if len(rows) > size {
		rows = rows[:size]
		last := rows[size-1]
		b := binary.BigEndian.AppendUint64(nil, uint64(last.CreatedAt.UnixMicro()))
		next = base64.RawURLEncoding.EncodeToString(append(b, last.ID[:]...))
	}
	out := make([]Claim, len(rows))
	for i, r := range rows {
		out[i] = claimFromRow(r)
	}
	return out, next, nil
}

// AcknowledgeClaim is the donor's acknowledgement of an OPEN claim.
func (s *Service) AcknowledgeClaim(ctx context.Context, c Caller, id string) (Claim, error) {
	return s.actOnClaim(ctx, c, id, ClaimActionAcknowledge, ReasonUnspecified, "")
}

// ConfirmClaim is the donor's confirmation: once the directory accepts it,
// the key leaves the donor.
func (s *Service) ConfirmClaim(ctx context.Context, c Caller, id string, reason Reason) (Claim, error) {
	return s.actOnClaim(ctx, c, id, ClaimActionConfirm, reason, "")
}

// CancelClaim cancels a claim, by either side as BCB allows.
func (s *Service) CancelClaim(ctx context.Context, c Caller, id string, reason Reason) (Claim, error) {
	return s.actOnClaim(ctx, c, id, ClaimActionCancel, reason, "")
}

// CompleteClaim is the claimer's completion of a CONFIRMED claim: once the
// directory accepts it, the key is the claimer's, its entry created with
// the CID of requestID.
func (s *Service) CompleteClaim(ctx context.Context, c Caller, id, requestID string) (Claim, error) {
	return s.actOnClaim(ctx, c, id, ClaimActionComplete, ReasonUnspecified, requestID)
}

func (s *Service) actOnClaim(ctx context.Context, c Caller, idStr string, action ClaimAction, reason Reason, requestID string) (Claim, error) {
	id, err := parseClaimID(idStr)
	if err != nil {
		return Claim{}, err
	}
	reqID := uuid.New()
	var fp []byte
	if action == ClaimActionComplete {
		if reqID, err = parseRequestID(requestID); err != nil {
			return Claim{}, err
		}
		fp = fingerprint("CompleteClaim", c.Participant, id)
	}
	var out Claim
	err = s.inTx(ctx, "claim "+action.String(), only(c), func(q *sqlc.Queries) error {
		if fp != nil {
			if prior, done, err := s.claimRequestOnce(ctx, q, reqID, c.Participant, "CompleteClaim", fp); err != nil || done {
				out = prior
				return err
			}
		}
		row, err := q.GetClaimForUpdate(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNoClaim
		} else if err != nil {
			return err
		}
		cl := claimFromRow(row)
		side := cl.Side(c.Participant)
		if side == ClaimSideNone {
			return errNoClaim
		}
		out, err = s.sendClaimAction(ctx, q, c, cl, side, action, reason, reqID, s.now().UTC())
		if err != nil {
			return err
		}
		if fp != nil {
			return s.answerClaimRequest(ctx, q, reqID, out)
		}
		return nil
	})
	if err != nil {
		return Claim{}, err
	}
	return out, nil
}

// sendClaimAction checks action against the claim's state with
// [ClaimTransition], then keeps it pending with its DirectoryRequest in the
// outbox. It runs in the caller's transaction, with the claim's row locked.
func (s *Service) sendClaimAction(ctx context.Context, q *sqlc.Queries, c Caller, cl Claim, side ClaimSide, action ClaimAction, reason Reason, reqID uuid.UUID, now time.Time) (Claim, error) {
	if cl.Status == ClaimStatusUnspecified {
		return Claim{}, E(KindPrecondition, ReasonClaimOperationInvalid, "the claim was not opened by the directory (DICT): it is still being created, or the directory refused it")
	}
	if cl.PendingOp != "" {
		return Claim{}, E(KindPrecondition, ReasonClaimPendingOperation,
			"the claim has a %s waiting for the directory (DICT); retry once GetClaim shows no pending_operation", cl.PendingOp)
	}
	if _, err := ClaimTransition(cl.state(), side, action, reason, now); err != nil {
		return Claim{}, err
	}
	corr := uuid.New()
	ts := now.Truncate(time.Microsecond)
	p := sqlc.SetClaimPendingParams{ID: cl.ID, PendingAction: pgtype.Text{String: action.String(), Valid: true},
		PendingParticipant: c.Participant, PendingCorrelation: uuid.NullUUID{UUID: corr, Valid: true},
		UpdatedAt: ts}
	if reason != ReasonUnspecified {
		p.PendingReason = reason.String()
	}
	if action == ClaimActionComplete {
		p.PendingRequestID = uuid.NullUUID{UUID: reqID, Valid: true}
	}
	if err := q.SetClaimPending(ctx, p); err != nil {
		return Claim{}, err
	}
	before := cl
	cl.PendingOp, cl.FailureReason, cl.FailureMessage, cl.UpdatedAt = action.String(), "", "", ts
	if err := s.recordClaim(ctx, q, c, titleAction(action), reqID, reason, &before, &cl); err != nil {
		return Claim{}, err
	}
	if err := s.requestDirectory(ctx, q, c, corr, reqID, cl.Key, &dictv1.DirectoryRequest{
		Operation: &dictv1.DirectoryRequest_ClaimAction{ClaimAction: &dictv1.DirClaimAction{
			ClaimId: cl.ID.String(), Action: dictv1.ClaimAction(action), Reason: dictv1.Reason(reason), Key: cl.Key}}}); err != nil {
		return Claim{}, err
	}
	s.logger.InfoContext(ctx, "claim action sent to the directory", "claim", cl.ID.String(), "action", action.String(),
		"reason", reason.String(), "side", side.String(), "participant", c.Participant)
	return cl, nil
}

func titleAction(a ClaimAction) string {
	switch a {
	case ClaimActionAcknowledge:
		return "AcknowledgeClaim"
	case ClaimActionConfirm:
		return "ConfirmClaim"
	case ClaimActionCancel:
		return "CancelClaim"
	case ClaimActionComplete:
		return "CompleteClaim"
	}
	return "ClaimAction"
}

// claimRequestOnce is RequestId idempotency for claim writes (see requestOnce).
func (s *Service) claimRequestOnce(ctx context.Context, q *sqlc.Queries, id uuid.UUID, participant, op string, fp []byte) (Claim, bool, error) {
	return requestOnce[Claim](ctx, q, id, participant, op, fp)
}

func (s *Service) answerClaimRequest(ctx context.Context, q *sqlc.Queries, id uuid.UUID, cl Claim) error {
	return storeAnswer(ctx, q, id, cl)
}

// recordClaim writes the audit row of a claim's change, under its key.
func (s *Service) recordClaim(ctx context.Context, q *sqlc.Queries, c Caller, action string, reqID uuid.UUID, r Reason, before, after *Claim) error {
	var b, a []byte
	var err error
	if before != nil {
		if b, err = json.Marshal(before); err != nil {
			return err
		}
	}
	if after != nil {
		if a, err = json.Marshal(after); err != nil {
			return err
		}
	}
	key := ""
	if after != nil {
		key = after.Key
	} else if before != nil {
		key = before.Key
	}
	reason := ""
	if r != ReasonUnspecified {
		reason = r.String()
	}
	return q.InsertAudit(ctx, sqlc.InsertAuditParams{
		At: s.now().UTC(), Participant: c.Participant, Actor: c.Subject, Action: action, Key: key,
		RequestID: uuid.NullUUID{UUID: reqID, Valid: reqID != uuid.Nil}, Reason: reason, Before: b, After: a,
	})
}

// emitClaim writes a claim event to the outbox (PULSAR_TOPIC_CLAIM_EVENTS),
// keyed by the claimed key so one key's events stay in order.
func (s *Service) emitClaim(ctx context.Context, q *sqlc.Queries, participant string, cl Claim, env *dictv1.EventEnvelope) error {
	id := uuid.New()
	now := s.now().UTC()
	env.EventId = id.String()
	env.AggregateId = cl.ID.String()
	env.AggregateType = "Claim"
	env.Participant = participant
	env.OccurredAt = timestamppb.New(now)
	env.SchemaVersion = eventSchemaVersion
	b, err := proto.Marshal(env)
	if err != nil {
		return err
	}
	var tp pgtype.Text
	if s.traceParent != nil {
		if v := s.traceParent(ctx); v != "" {
			tp = pgtype.Text{String: v, Valid: true}
		}
	}
	topic := s.claimTopic
	if topic == "" {
		topic = "persistent://dict/events/claim-events"
	}
	return q.InsertOutbox(ctx, sqlc.InsertOutboxParams{
		ID: id, CreatedAt: now, Topic: topic, PartitionKey: cl.Key, EventType: env.GetEventType(),
		AggregateType: "Claim", AggregateID: cl.ID.String(), Participant: participant,
		ContentType: EventContentType, Payload: b, Traceparent: tp,
	})
}

// claimEvent is the domain event of a claim reaching its status.
func claimEvent(cl Claim, reason Reason) *dictv1.EventEnvelope {
	p := cl.Proto()
	p.PendingOperation, p.FailureReason, p.FailureMessage = "", "", ""
	switch cl.Status {
	case ClaimStatusOpen:
		return &dictv1.EventEnvelope{EventType: "ClaimOpened", Payload: &dictv1.EventEnvelope_ClaimOpened{ClaimOpened: &dictv1.ClaimOpened{Claim: p}}}
	case ClaimStatusWaitingResolution:
		return &dictv1.EventEnvelope{EventType: "ClaimAcknowledged", Payload: &dictv1.EventEnvelope_ClaimAcknowledged{ClaimAcknowledged: &dictv1.ClaimAcknowledged{Claim: p}}}
	case ClaimStatusConfirmed:
		return &dictv1.EventEnvelope{EventType: "ClaimConfirmed", Payload: &dictv1.EventEnvelope_ClaimConfirmed{ClaimConfirmed: &dictv1.ClaimConfirmed{Claim: p, Reason: dictv1.Reason(reason)}}}
	case ClaimStatusCancelled:
		return &dictv1.EventEnvelope{EventType: "ClaimCancelled", Payload: &dictv1.EventEnvelope_ClaimCancelled{ClaimCancelled: &dictv1.ClaimCancelled{Claim: p, Reason: dictv1.Reason(reason)}}}
	case ClaimStatusCompleted:
		return &dictv1.EventEnvelope{EventType: "ClaimCompleted", Payload: &dictv1.EventEnvelope_ClaimCompleted{ClaimCompleted: &dictv1.ClaimCompleted{Claim: p}}}
	}
	return nil
}

// eventParticipant is the local participant a claim's events are about:
// the donor when only the donor is local, else the claimer.
func (cl Claim) eventParticipant() string {
	if cl.IsDonor && !cl.IsClaimer {
		return cl.DonorParticipant
	}
	return cl.ClaimerParticipant
}

// IsClaimResponse reports whether resp answers a claim request this
// service sent (create or action) that is still pending: the responses
// consumer hands those to [Service.ApplyClaimResponse] and the others to
// [Service.ApplyDirectoryResponse].
func (s *Service) IsClaimResponse(ctx context.Context, resp *dictv1.DirectoryResponse) (bool, error) {
	if resp.GetClaim() != nil {
		return true, nil
	}
	if resp.GetError() == nil {
		// An entry's answer (entry, deleted): no claim request to look up.
		return false, nil
	}
	corr, err := uuid.Parse(resp.GetCorrelationId())
	if err != nil {
		return false, nil
	}
	var ok bool
	err = s.read(ctx, s.workerScope(), func(q *sqlc.Queries) (err error) {
		ok, err = q.ClaimCorrelationExists(ctx, uuid.NullUUID{UUID: corr, Valid: true})
		return err
	})
	if err != nil {
		return false, dbError("apply directory response", err)
	}
	return ok, nil
}

// ApplyClaimResponse applies the directory's answer to a claim request
// this service sent: a create takes the directory's id, status and
// periods; an action its new status and effects on the entries
// (confirmed: the donor's entry leaves; completed: the claimer's entry is
// created; cancelled: the donor's entry is unlocked or restored); a refusal
// leaves the claim as it was, with the directory's reason (a refused create
// is FAILED). Applied once per correlation id, in one transaction with its
// record; a response that matches no pending request changes nothing.
func (s *Service) ApplyClaimResponse(ctx context.Context, resp *dictv1.DirectoryResponse) error {
	corr, err := uuid.Parse(resp.GetCorrelationId())
	if err != nil {
		s.logger.WarnContext(ctx, "directory response without a valid correlation id, ignored", "correlation_id", resp.GetCorrelationId())
		return nil
	}
	var touched []string
	err = s.applyOnce(ctx, corr.String(), func(ctx context.Context, q *sqlc.Queries) error {
		touched = nil
		row, err := q.GetClaimByCorrelation(ctx, uuid.NullUUID{UUID: corr, Valid: true})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		touched, err = s.applyClaimResponse(ctx, q, row, resp)
		return err
	})
	if err != nil {
		return dbError("apply claim response", err)
	}
	s.invalidate(ctx, touched)
	return nil
}

// applyOnce runs fn for the directory's message id once, in one
// transaction acting for the participants this instance serves (the
// message may concern any of them).
func (s *Service) applyOnce(ctx context.Context, id string, fn func(ctx context.Context, q *sqlc.Queries) error) error {
	scope := s.workerScope()
	if s.responseOnce != nil {
		return s.responseOnce(ctx, id, func(ctx context.Context, tx pgx.Tx) error {
			if err := setParticipants(ctx, tx, scope); err != nil {
				return err
			}
			return fn(ctx, s.q.WithTx(tx))
		})
	}
	return s.tx(ctx, scope, false, func(tx pgx.Tx) error { return fn(ctx, s.q.WithTx(tx)) })
}

func (s *Service) invalidate(ctx context.Context, keys []string) {
	if s.cache == nil {
		return
	}
	for _, k := range keys {
		s.cache.Invalidate(ctx, k)
	}
}

func (s *Service) applyClaimResponse(ctx context.Context, q *sqlc.Queries, row sqlc.Claim, resp *dictv1.DirectoryResponse) ([]string, error) {
	before := claimFromRow(row)
	c := Caller{Participant: row.PendingParticipant, Subject: "dict"}
	reqID := row.PendingRequestID.UUID
	reason, _ := parseReason(row.PendingReason)
	now := s.now().UTC().Truncate(time.Microsecond)
	op := before.PendingOp
	dc := resp.GetClaim()
	if de := resp.GetError(); de != nil || dc == nil {
		after := before
		after.PendingOp, after.UpdatedAt = "", now
		after.FailureReason, after.FailureMessage = de.GetReason(), de.GetMessage()
		if de == nil {
			after.FailureReason, after.FailureMessage = ReasonInternal, "the directory's answer held no claim"
		}
		status := row.Status
		if op == PendingClaimCreate {
			status = claimStatusFailed
		}
		if err := q.RefuseClaim(ctx, sqlc.RefuseClaimParams{ID: row.ID, Status: status, FailureReason: after.FailureReason,
			FailureMessage: after.FailureMessage, UpdatedAt: now}); err != nil {
			return nil, err
		}
		s.logger.InfoContext(ctx, "directory refused a claim request", "claim", row.ID.String(), "operation", op, "reason", after.FailureReason)
		return nil, s.recordClaim(ctx, q, c, "ClaimRequestRefused", reqID, reason, &before, &after)
	}
	if op == PendingClaimCreate {
		id, err := uuid.Parse(dc.GetId())
		if err != nil {
			return nil, Internal("apply claim response", errors.New("the directory's claim id is not a UUID"))
		}
		after := before
		after.ID, after.Status = id, ClaimStatus(dc.GetStatus())
		after.DonorParticipant = dc.GetDonorParticipant()
		after.ResolutionPeriodEnd = timeOf(dc.GetResolutionPeriodEnd(), before.ResolutionPeriodEnd)
		after.CompletionPeriodEnd = timeOf(dc.GetCompletionPeriodEnd(), before.CompletionPeriodEnd)
		after.CreatedAt = timeOf(dc.GetCreatedAt(), before.CreatedAt)
		after.UpdatedAt, after.PendingOp = now, ""
		if err := q.OpenClaimFromDirectory(ctx, sqlc.OpenClaimFromDirectoryParams{ID: row.ID, NewID: id,
			Status: after.Status.String(), ResolutionPeriodEnd: after.ResolutionPeriodEnd, CompletionPeriodEnd: after.CompletionPeriodEnd,
			CreatedAt: after.CreatedAt, UpdatedAt: now, DonorParticipant: after.DonorParticipant}); err != nil {
			return nil, err
		}
		if err := s.recordClaim(ctx, q, c, "CreateClaimConfirmed", reqID, ReasonUnspecified, &before, &after); err != nil {
			return nil, err
		}
		if err := s.emitClaim(ctx, q, after.eventParticipant(), after, claimEvent(after, ReasonUnspecified)); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return s.applyClaimChange(ctx, q, c, row, dc, reason, reqID)
}

func timeOf(t *timestamppb.Timestamp, def time.Time) time.Time {
	if t == nil || !t.IsValid() {
		return def
	}
	return t.AsTime().UTC()
}

// applyClaimChange stores the status the directory gave a known claim
// (in a response or a notice) and applies its effects on this PSP's
// entries, on whichever sides are local. reason is this PSP's reason for
// its own action ("" for the other side's); completeReqID the request id
// of this PSP's completion (the CID of the claimer's new entry).
func (s *Service) applyClaimChange(ctx context.Context, q *sqlc.Queries, c Caller, row sqlc.Claim, dc *dictv1.Claim, reason Reason, completeReqID uuid.UUID) ([]string, error) {
	before := claimFromRow(row)
	to := ClaimStatus(dc.GetStatus())
	from := before.Status
	now := s.now().UTC().Truncate(time.Microsecond)
	after := before
	after.Status, after.UpdatedAt, after.PendingOp, after.FailureReason, after.FailureMessage = to, now, "", "", ""
	if to == ClaimStatusCancelled {
		after.CancelReason = Reason(dc.GetCancelReason())
		reason = after.CancelReason
	}
	if to == ClaimStatusConfirmed && from != ClaimStatusConfirmed {
		after.ConfirmReason = reason
	}
	if to == from {
		// A repeated notice, or the other side's notice of what this PSP's
		// response already applied: only a pending action is cleared.
		if before.PendingOp == "" {
			return nil, nil
		}
	}
	p := sqlc.SetClaimStatusParams{ID: row.ID, Status: to.String(), UpdatedAt: now}
	if after.CancelReason != ReasonUnspecified {
		p.CancelReason = after.CancelReason.String()
	}
	if after.ConfirmReason != ReasonUnspecified {
		p.ConfirmReason = after.ConfirmReason.String()
	}
	if err := q.SetClaimStatus(ctx, p); err != nil {
		return nil, err
	}
	if err := s.recordClaim(ctx, q, c, "Claim"+titleStatus(to), completeReqID, reason, &before, &after); err != nil {
		return nil, err
	}
	if to == from {
		return nil, nil
	}
	var touched []string
	if after.IsDonor {
		k, err := s.donorEffect(ctx, q, after, from, to, reason)
		if err != nil {
			return nil, err
		}
		touched = append(touched, k...)
	}
	if after.IsClaimer && to == ClaimStatusCompleted {
		k, err := s.claimerEffect(ctx, q, after, completeReqID)
		if err != nil {
			return nil, err
		}
		touched = append(touched, k...)
	}
	if env := claimEvent(after, reason); env != nil {
		if err := s.emitClaim(ctx, q, after.eventParticipant(), after, env); err != nil {
			return nil, err
		}
	}
	return touched, nil
}

func titleStatus(st ClaimStatus) string {
	switch st {
	case ClaimStatusOpen:
		return "Opened"
	case ClaimStatusWaitingResolution:
		return "Acknowledged"
	case ClaimStatusConfirmed:
		return "Confirmed"
	case ClaimStatusCancelled:
		return "Cancelled"
	case ClaimStatusCompleted:
		return "Completed"
	}
	return "Changed"
}

// donorEffect applies a claim's new status to the donor's entry: locked
// while the claim is open, removed (CID REMOVED) once confirmed, unlocked
// or, after a confirm, restored (CID ADDED) once cancelled.
func (s *Service) donorEffect(ctx context.Context, q *sqlc.Queries, cl Claim, from, to ClaimStatus, reason Reason) ([]string, error) {
	donor := Caller{Participant: cl.DonorParticipant, Subject: "dict"}
	now := s.now().UTC().Truncate(time.Microsecond)
	switch {
	case to == ClaimStatusOpen || to == ClaimStatusWaitingResolution:
		return []string{cl.Key}, q.SetEntryClaimLock(ctx, sqlc.SetEntryClaimLockParams{Key: cl.Key, Status: EntryStatusLockedByClaim.String(), UpdatedAt: now})
	case to == ClaimStatusConfirmed || (to == ClaimStatusCompleted && from != ClaimStatusConfirmed):
		row, err := q.GetEntryForUpdate(ctx, cl.Key)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && row.Participant != cl.DonorParticipant) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		e := entryFromRow(row)
		stash, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		if err := q.SetClaimDonorEntry(ctx, sqlc.SetClaimDonorEntryParams{ID: cl.ID, DonorEntry: stash}); err != nil {
			return nil, err
		}
		if err := q.DeleteEntry(ctx, cl.Key); err != nil {
			return nil, err
		}
		after := e
		after.Status, after.PendingOp, after.UpdatedAt = EntryStatusDeleted, "", now
		if err := s.record(ctx, q, donor, "ClaimRemovedEntry", cl.Key, e.RequestID, reason, &e, &after); err != nil {
			return nil, err
		}
		return []string{cl.Key}, s.emitEntry(ctx, q, donor, after, &dictv1.EventEnvelope{EventType: "KeyDeleted",
			Payload: &dictv1.EventEnvelope_KeyDeleted{KeyDeleted: &dictv1.KeyDeleted{
				Entry: after.Proto(), RequestId: e.RequestID.String(), Reason: dictv1.Reason(reason),
				CidEvents: []*dictv1.CidEvent{cidRemoved(e.CID)}}}})
	case to == ClaimStatusCancelled && from == ClaimStatusConfirmed:
		row, err := q.GetClaim(ctx, cl.ID)
		if err != nil {
			return nil, err
		}
		if len(row.DonorEntry) == 0 {
			return nil, nil
		}
		var e Entry
		if err := json.Unmarshal(row.DonorEntry, &e); err != nil {
			return nil, err
		}
		if _, err := q.GetEntry(ctx, e.Key); err == nil {
			return nil, nil // the key is here again already
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
		e.Status, e.PendingOp, e.FailureReason, e.FailureMessage, e.UpdatedAt = EntryStatusActive, "", "", "", now
		if err := q.InsertEntry(ctx, insertParams(e)); err != nil {
			return nil, err
		}
		if err := s.record(ctx, q, donor, "ClaimRestoredEntry", e.Key, e.RequestID, reason, nil, &e); err != nil {
			return nil, err
		}
		return []string{e.Key}, s.emitEntry(ctx, q, donor, e, &dictv1.EventEnvelope{EventType: "KeyCreated",
			Payload: &dictv1.EventEnvelope_KeyCreated{KeyCreated: &dictv1.KeyCreated{
				Entry: e.Proto(), RequestId: e.RequestID.String(), CidEvents: []*dictv1.CidEvent{cidAdded(e.CID)}}}})
	case to == ClaimStatusCancelled:
		return []string{cl.Key}, q.SetEntryClaimLock(ctx, sqlc.SetEntryClaimLockParams{Key: cl.Key, Status: EntryStatusActive.String(), UpdatedAt: now})
	}
	return nil, nil
}

// claimerEffect creates the claimer's entry of a completed claim: ACTIVE,
// with the claimer's account and owner and the CID of the completion's
// request id, as the directory computes it (CID ADDED).
func (s *Service) claimerEffect(ctx context.Context, q *sqlc.Queries, cl Claim, reqID uuid.UUID) ([]string, error) {
	claimer := Caller{Participant: cl.ClaimerParticipant, Subject: "dict"}
	if reqID == uuid.Nil {
		s.logger.WarnContext(ctx, "claim completed without this PSP's completion request; entry not created", "claim", cl.ID.String())
		return nil, nil
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	e := Entry{KeyType: cl.KeyType, Key: cl.Key, Account: cl.ClaimerAccount, Owner: cl.Claimer,
		Status: EntryStatusActive, CreatedAt: now, KeyOwnedSince: now, UpdatedAt: now, RequestID: reqID}
	e.CID = CID(reqID, e)
	if _, err := q.GetEntry(ctx, e.Key); err == nil {
		// Both sides are local and the donor's entry is still here (the
		// confirm was missed): the key now is the claimer's.
		if err := q.DeleteEntry(ctx, e.Key); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	if err := q.InsertEntry(ctx, insertParams(e)); err != nil {
		return nil, err
	}
	if err := s.record(ctx, q, claimer, "ClaimCreatedEntry", e.Key, reqID, ReasonUnspecified, nil, &e); err != nil {
		return nil, err
	}
	return []string{e.Key}, s.emitEntry(ctx, q, claimer, e, &dictv1.EventEnvelope{EventType: "KeyCreated",
		Payload: &dictv1.EventEnvelope_KeyCreated{KeyCreated: &dictv1.KeyCreated{
			Entry: e.Proto(), RequestId: reqID.String(), CidEvents: []*dictv1.CidEvent{cidAdded(e.CID)}}}})
}

// errClaimNotYetKnown makes a notice wait (the consumer redelivers it) for
// the response that tells this PSP the claim's id.
var errClaimNotYetKnown = errors.New("claim notice before the directory's response to its create; retried")

// ApplyDirectoryNotice applies what the directory tells this PSP unasked:
// a claim on one of its keys (it is the donor: the claim appears OPEN and
// the entry becomes LOCKED_BY_CLAIM), or the other side's change to a
// claim it takes part in, including the deadlines the directory enforced.
// Applied once per notice id.
func (s *Service) ApplyDirectoryNotice(ctx context.Context, n *dictv1.DirectoryNotice) error {
	dc := n.GetClaim()
	if dc == nil || n.GetNoticeId() == "" {
		s.logger.WarnContext(ctx, "directory notice without a claim or an id, ignored", "notice_id", n.GetNoticeId())
		return nil
	}
	id, err := uuid.Parse(dc.GetId())
	if err != nil {
		s.logger.WarnContext(ctx, "directory notice with an invalid claim id, ignored", "claim", dc.GetId())
		return nil
	}
	participant := n.GetParticipant()
	var touched []string
	err = s.applyOnce(ctx, "notice:"+n.GetNoticeId(), func(ctx context.Context, q *sqlc.Queries) error {
		touched = nil
		c := Caller{Participant: participant, Subject: "dict"}
		row, err := q.GetClaimForUpdate(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			if participant != dc.GetDonorParticipant() {
				return errClaimNotYetKnown
			}
			if held, err := q.ClaimHoldingKey(ctx, dc.GetKey()); err == nil && held.Status == claimStatusPending {
				return errClaimNotYetKnown
			}
			row, touched, err = s.insertNoticedClaim(ctx, q, c, id, dc)
			if err != nil || ClaimStatus(dc.GetStatus()) == ClaimStatusOpen {
				return err
			}
		} else if err != nil {
			return err
		}
		if participant == dc.GetDonorParticipant() && !row.IsDonor {
			// Both sides are local: the donor's side joins the claimer's row.
			if err := q.SetClaimStatus(ctx, sqlc.SetClaimStatusParams{ID: row.ID, Status: row.Status, CancelReason: row.CancelReason,
				ConfirmReason: row.ConfirmReason, UpdatedAt: row.UpdatedAt, Donor: true}); err != nil {
				return err
			}
			if err := q.SetEntryClaimLock(ctx, sqlc.SetEntryClaimLockParams{Key: row.Key, Status: EntryStatusLockedByClaim.String(),
				UpdatedAt: s.now().UTC().Truncate(time.Microsecond)}); err != nil {
				return err
			}
			if row, err = q.GetClaimForUpdate(ctx, id); err != nil {
				return err
			}
		}
		// A notice whose status differs is newer than what is stored, even
		// when an action of this PSP's crossed it (the directory then
		// refuses that action, and its refusal finds nothing pending).
		if row.Status == ClaimStatus(dc.GetStatus()).String() {
			return nil
		}
		more, err := s.applyClaimChange(ctx, q, c, row, dc, ReasonUnspecified, uuid.Nil)
		touched = append(touched, more...)
		return err
	})
	if errors.Is(err, errClaimNotYetKnown) {
		return err
	}
	if err != nil {
		return dbError("apply directory notice", err)
	}
	s.invalidate(ctx, touched)
	return nil
}

// insertNoticedClaim stores a claim this PSP learns of as donor, OPEN, and
// locks the donor's entry.
func (s *Service) insertNoticedClaim(ctx context.Context, q *sqlc.Queries, c Caller, id uuid.UUID, dc *dictv1.Claim) (sqlc.Claim, []string, error) {
	acc := EntryFromProto(&dictv1.Entry{Account: dc.GetClaimerAccount()}).Account
	owner := EntryFromProto(&dictv1.Entry{Owner: dc.GetClaimer()}).Owner
	accJSON, _ := json.Marshal(acc)
	ownerJSON, _ := json.Marshal(owner)
	now := s.now().UTC().Truncate(time.Microsecond)
	created := timeOf(dc.GetCreatedAt(), now)
	ct := ClaimType(dc.GetType())
	resEnd, compEnd := ClaimPeriods(ct, created)
	cl := Claim{
		ID: id, Type: ct, Status: ClaimStatusOpen, KeyType: KeyType(dc.GetKeyType()), Key: dc.GetKey(),
		ClaimerAccount: acc, Claimer: owner, ClaimerParticipant: acc.Participant, DonorParticipant: dc.GetDonorParticipant(),
		ResolutionPeriodEnd: timeOf(dc.GetResolutionPeriodEnd(), resEnd), CompletionPeriodEnd: timeOf(dc.GetCompletionPeriodEnd(), compEnd),
		CreatedAt: created, UpdatedAt: now, IsDonor: true,
	}
	if err := q.InsertClaim(ctx, sqlc.InsertClaimParams{
		ID: id, ClaimType: ct.String(), Status: ClaimStatusOpen.String(), KeyType: cl.KeyType.String(), Key: cl.Key,
		ClaimerParticipant: cl.ClaimerParticipant, DonorParticipant: cl.DonorParticipant,
		ResolutionPeriodEnd: cl.ResolutionPeriodEnd, CompletionPeriodEnd: cl.CompletionPeriodEnd,
		CreatedAt: created, UpdatedAt: now, IsDonor: true, ClaimerAccount: accJSON, ClaimerOwner: ownerJSON,
	}); err != nil {
		return sqlc.Claim{}, nil, err
	}
	if err := q.SetEntryClaimLock(ctx, sqlc.SetEntryClaimLockParams{Key: cl.Key, Status: EntryStatusLockedByClaim.String(), UpdatedAt: now}); err != nil {
		return sqlc.Claim{}, nil, err
	}
	if err := s.recordClaim(ctx, q, c, "ClaimReceived", uuid.Nil, ReasonUnspecified, nil, &cl); err != nil {
		return sqlc.Claim{}, nil, err
	}
	if err := s.emitClaim(ctx, q, cl.DonorParticipant, cl, claimEvent(cl, ReasonUnspecified)); err != nil {
		return sqlc.Claim{}, nil, err
	}
	s.logger.InfoContext(ctx, "claim received as donor", "claim", id.String(), "key", MaskForLog(cl.Key), "type", ct.String())
	row, err := q.GetClaimForUpdate(ctx, id)
	return row, []string{cl.Key}, err
}
