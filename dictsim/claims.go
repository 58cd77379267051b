package dictsim

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim/store"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

func (o *operation) createClaim(ctx context.Context, in *dictv1.DirCreateClaim) error {
	ct := dict.ClaimType(in.GetType())
	if ct != dict.ClaimTypePortability && ct != dict.ClaimTypeOwnership {
		return dict.Invalid("type", "claim type must be PORTABILITY or OWNERSHIP")
	}
	kt, key, err := dict.NormalizeAnyKey(dict.KeyType(in.GetKeyType()), in.GetKey())
	if err != nil {
		return err
	}
	acc, err := accountIn(in.GetClaimerAccount()).Normalize()
	if err != nil {
		return err
	}
	claimer, err := ownerIn(in.GetClaimer()).Normalize()
	if err != nil {
		return err
	}
	if acc.Participant != o.req.GetParticipant() {
		return dict.E(dict.KindInvalid, dict.ReasonClaimInvalid, "the claimer's account must be at the sending participant %s", o.req.GetParticipant())
	}
	if err := dict.CheckKeyOwner(dict.Entry{KeyType: kt, Key: key, Owner: claimer}); err != nil {
		return err
	}
	if err := o.q.LockKey(ctx, "key:"+key); err != nil {
		return err
	}
	if _, open, err := o.openClaim(ctx, key); err != nil {
		return err
	} else if open {
		return dict.E(dict.KindConflict, dict.ReasonClaimAlreadyExistsForKey, "the key already has an open claim")
	}
	donor, ok, err := o.entry(ctx, key)
	if err != nil {
		return err
	}
	if !ok {
		return dict.E(dict.KindNotFound, dict.ReasonClaimKeyNotFound, "the key has no entry in the directory; register it instead of claiming it")
	}
	if donor.KeyType != kt {
		return dict.E(dict.KindInvalid, dict.ReasonClaimInvalid, "the key is registered as %s, not %s", donor.KeyType, kt)
	}
	if donor.Account.Participant == o.req.GetParticipant() {
		return dict.E(dict.KindPrecondition, dict.ReasonClaimInvalid, "the key is already held by the claimer's participant")
	}
	if err := dict.CheckClaimType(ct, kt, donor.Owner.TaxID == claimer.TaxID); err != nil {
		return err
	}
	if err := o.checkLimit(ctx, acc, claimer.Type); err != nil {
		return err
	}
	resolutionEnd, completionEnd := dict.ClaimPeriods(ct, o.now)
	c := &dictv1.Claim{
		Id: newID(), Type: dictv1.ClaimType(ct), Status: dictv1.ClaimStatus_CLAIM_STATUS_OPEN,
		KeyType: dictv1.KeyType(kt), Key: key,
		ClaimerAccount:      dict.Entry{Account: acc}.Proto().GetAccount(),
		Claimer:             dict.Entry{Owner: claimer}.Proto().GetOwner(),
		DonorParticipant:    donor.Account.Participant,
		ResolutionPeriodEnd: timestamppb.New(resolutionEnd), CompletionPeriodEnd: timestamppb.New(completionEnd),
		CreatedAt: timestamppb.New(o.now), UpdatedAt: timestamppb.New(o.now),
	}
	cb, err := proto.Marshal(c)
	if err != nil {
		return err
	}
	db, err := proto.Marshal(donor.Proto())
	if err != nil {
		return err
	}
	if err := o.q.InsertClaim(ctx, store.InsertClaimParams{
		ID: uuid.MustParse(c.Id), ClaimType: ct.String(), Status: dict.ClaimStatusOpen.String(), Key: key,
		ClaimerParticipant: o.req.GetParticipant(), DonorParticipant: donor.Account.Participant,
		CreatedAt: o.now, ResolutionPeriodEnd: resolutionEnd, CompletionPeriodEnd: completionEnd, UpdatedAt: o.now,
		Claim: cb, DonorEntry: db,
	}); err != nil {
		return err
	}
	o.res.Result = &dictv1.DirectoryResponse_Claim{Claim: c}
	o.notify(donor.Account.Participant, c)
	return nil
}

// notify tells participant about claim c.
func (o *operation) notify(participant string, c *dictv1.Claim) {
	o.notice = &dictv1.DirectoryNotice{NoticeId: newID(), Participant: participant, At: timestamppb.New(o.now),
		Notice: &dictv1.DirectoryNotice_Claim{Claim: c}}
}

func (o *operation) claimAction(ctx context.Context, in *dictv1.DirClaimAction) error {
	id, err := uuid.Parse(in.GetClaimId())
	if err != nil {
		return dict.Invalid("claim_id", "claim_id must be the claim's UUID")
	}
	notFound := dict.E(dict.KindNotFound, dict.ReasonClaimNotFound, "no claim has this id")
	row, err := o.q.GetClaimForUpdate(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound
	} else if err != nil {
		return err
	}
	if err := o.q.LockKey(ctx, "key:"+row.Key); err != nil {
		return err
	}
	c := new(dictv1.Claim)
	if err := proto.Unmarshal(row.Claim, c); err != nil {
		return err
	}
	side := dict.ClaimSideNone
	switch o.req.GetParticipant() {
	case row.ClaimerParticipant:
		side = dict.ClaimSideClaimer
	case row.DonorParticipant:
		side = dict.ClaimSideDonor
	}
	ct, _ := dict.ParseClaimType(row.ClaimType)
	st, _ := dict.ParseClaimStatus(row.Status)
	action, reason := dict.ClaimAction(in.GetAction()), dict.Reason(in.GetReason())
	out, err := dict.ClaimTransition(dict.ClaimState{Type: ct, Status: st, CreatedAt: row.CreatedAt,
		ResolutionPeriodEnd: row.ResolutionPeriodEnd, CompletionPeriodEnd: row.CompletionPeriodEnd},
		side, action, reason, o.now)
	if err != nil {
		return err
	}
	switch out.Effect {
	case dict.ClaimEffectRemoveDonorEntry:
		if _, err := o.q.DeleteEntry(ctx, row.Key); err != nil {
			return err
		}
	case dict.ClaimEffectRestoreDonorEntry:
		p := new(dictv1.Entry)
		if err := proto.Unmarshal(row.DonorEntry, p); err != nil {
			return err
		}
		params, err := insertParams(entryFromProto(p))
		if err != nil {
			return err
		}
		if err := o.q.InsertEntry(ctx, params); err != nil {
			return err
		}
	case dict.ClaimEffectCreateClaimerEntry:
		reqID, err := dict.ParseRequestID(o.req.GetRequestId())
		if err != nil {
			return err
		}
		e := dict.Entry{
			KeyType: dict.KeyType(c.GetKeyType()), Key: c.GetKey(),
			Account: accountIn(c.GetClaimerAccount()), Owner: ownerIn(c.GetClaimer()),
			Status: dict.EntryStatusActive, CreatedAt: o.now, KeyOwnedSince: o.now, UpdatedAt: o.now, RequestID: reqID,
		}
		e.CID = dict.CID(reqID, e)
		params, err := insertParams(e)
		if err != nil {
			return err
		}
		if err := o.q.InsertEntry(ctx, params); err != nil {
			return err
		}
	}
	c.Status = dictv1.ClaimStatus(out.Status)
	c.UpdatedAt = timestamppb.New(o.now)
	if out.Status == dict.ClaimStatusCancelled {
		c.CancelReason = dictv1.Reason(reason)
	}
	cb, err := proto.Marshal(c)
	if err != nil {
		return err
	}
	if err := o.q.UpdateClaim(ctx, store.UpdateClaimParams{ID: id, Status: out.Status.String(), UpdatedAt: o.now, Claim: cb}); err != nil {
		return err
	}
	o.res.Result = &dictv1.DirectoryResponse_Claim{Claim: c}
	other := row.DonorParticipant
	if side == dict.ClaimSideDonor {
		other = row.ClaimerParticipant
	}
	o.notify(other, c)
	return nil
}
