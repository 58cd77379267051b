package dictsim_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

func claimReq(t dictv1.ClaimType, kt dictv1.KeyType, key string, acc *dictv1.Account, owner *dictv1.Owner) *dictv1.DirectoryRequest {
	return &dictv1.DirectoryRequest{RequestId: uuid.NewString(), Operation: &dictv1.DirectoryRequest_CreateClaim{CreateClaim: &dictv1.DirCreateClaim{
		Type: t, KeyType: kt, Key: key, ClaimerAccount: acc, Claimer: owner}}}
}

func actionReq(id, key string, a dictv1.ClaimAction, r dictv1.Reason) *dictv1.DirectoryRequest {
	return &dictv1.DirectoryRequest{RequestId: uuid.NewString(), Operation: &dictv1.DirectoryRequest_ClaimAction{ClaimAction: &dictv1.DirClaimAction{
		ClaimId: id, Action: a, Reason: r, Key: key}}}
}

func wantNotice(t *testing.T, p *psp, id string, st dictv1.ClaimStatus) {
	t.Helper()
	n := p.notice()
	if n.GetParticipant() != p.ispb || n.GetClaim().GetId() != id || n.GetClaim().GetStatus() != st {
		t.Fatalf("notice to %s = %v, want claim %s %s", p.ispb, n, id, st)
	}
}

func wantStatus(t *testing.T, r *dictv1.DirectoryResponse, st dictv1.ClaimStatus) *dictv1.Claim {
	t.Helper()
	wantOK(t, r)
	if r.GetClaim().GetStatus() != st {
		t.Fatalf("claim status = %s, want %s", r.GetClaim().GetStatus(), st)
	}
	return r.GetClaim()
}

func TestPortabilityClaim(t *testing.T) {
	t.Parallel()
	h := newHarness(t, dictsim.Config{})
	donor, claimer, third := h.participant(), h.participant(), h.participant()
	owner := natural("Beatriz")
	email := newEmail()
	const kt = dictv1.KeyType_KEY_TYPE_EMAIL
	donorEntry := donor.call(email, createReq(kt, email, donor.account("1"), owner)).GetEntry()

	wantReason(t, claimer.call(email, claimReq(dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP, kt, email, claimer.account("9"), owner)), dict.ReasonClaimTypeInconsistent)
	wantReason(t, claimer.call("x", claimReq(dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, kt, newEmail(), claimer.account("9"), owner)), dict.ReasonClaimKeyNotFound)
	wantReason(t, donor.call(email, claimReq(dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, kt, email, donor.account("9"), owner)), dict.ReasonClaimInvalid)

	c := wantStatus(t, claimer.call(email, claimReq(dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, kt, email, claimer.account("9"), owner)), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)
	if c.GetDonorParticipant() != donor.ispb || !c.GetResolutionPeriodEnd().AsTime().Equal(h.clock.Now().Add(7*24*time.Hour)) {
		t.Errorf("claim = %v", c)
	}
	wantNotice(t, donor, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)

	wantReason(t, third.call(email, claimReq(dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, kt, email, third.account("9"), owner)), dict.ReasonClaimAlreadyExistsForKey)
	wantReason(t, donor.call(email, &dictv1.DirectoryRequest{RequestId: uuid.NewString(), Operation: &dictv1.DirectoryRequest_DeleteEntry{
		DeleteEntry: &dictv1.DirDeleteEntry{Key: email, Reason: dictv1.Reason_REASON_USER_REQUESTED}}}), dict.ReasonEntryLockedByClaim)

	wantStatus(t, donor.call(email, actionReq(c.GetId(), email, dictv1.ClaimAction_CLAIM_ACTION_ACKNOWLEDGE, 0)), dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)
	wantNotice(t, claimer, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)
	wantReason(t, claimer.call(email, actionReq(c.GetId(), email, dictv1.ClaimAction_CLAIM_ACTION_CONFIRM, dictv1.Reason_REASON_USER_REQUESTED)), dict.ReasonClaimOperationInvalid)
	wantReason(t, third.call(email, actionReq(c.GetId(), email, dictv1.ClaimAction_CLAIM_ACTION_CANCEL, dictv1.Reason_REASON_FRAUD)), dict.ReasonClaimOperationInvalid)
	wantReason(t, donor.call(email, actionReq(c.GetId(), email, dictv1.ClaimAction_CLAIM_ACTION_CANCEL, dictv1.Reason_REASON_DEFAULT_OPERATION)), dict.ReasonClaimResolutionPeriodNotEnded)

	wantStatus(t, donor.call(email, actionReq(c.GetId(), email, dictv1.ClaimAction_CLAIM_ACTION_CONFIRM, dictv1.Reason_REASON_USER_REQUESTED)), dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	wantNotice(t, claimer, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	wantReason(t, third.call(email, lookupReq(email, newCPF())), dict.ReasonEntryNotFound)
	wantReason(t, third.call(email, createReq(kt, email, third.account("5"), owner)), dict.ReasonEntryLockedByClaim)

	done := wantStatus(t, claimer.call(email, actionReq(c.GetId(), email, dictv1.ClaimAction_CLAIM_ACTION_COMPLETE, 0)), dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	wantNotice(t, donor, done.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	r := third.call(email, lookupReq(email, newCPF()))
	wantOK(t, r)
	if r.GetEntry().GetAccount().GetParticipant() != claimer.ispb || r.GetEntry().GetAccount().GetNumber() != "9" || r.GetEntry().GetCid() == donorEntry.GetCid() {
		t.Errorf("entry after portability = %v", r.GetEntry())
	}
	vs := donor.call("v", &dictv1.DirectoryRequest{Operation: &dictv1.DirectoryRequest_GetVsync{GetVsync: &dictv1.DirGetVSync{KeyType: kt}}})
	if vs.GetVsync().GetEntries() != 0 {
		t.Errorf("donor still has %d EMAIL entries", vs.GetVsync().GetEntries())
	}
	vs = claimer.call("v", &dictv1.DirectoryRequest{Operation: &dictv1.DirectoryRequest_GetVsync{GetVsync: &dictv1.DirGetVSync{KeyType: kt}}})
	if vs.GetVsync().GetVsync() != r.GetEntry().GetCid() {
		t.Errorf("claimer vsync = %s, want its one CID %s", vs.GetVsync().GetVsync(), r.GetEntry().GetCid())
	}
}

func TestOwnershipClaimDefaultOperation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, dictsim.Config{})
	donor, claimer := h.participant(), h.participant()
	phone := newPhone()
	const kt = dictv1.KeyType_KEY_TYPE_PHONE
	wantOK(t, donor.call(phone, createReq(kt, phone, donor.account("1"), natural("Antigo Dono"))))
	newOwner := natural("Novo Dono")

	wantReason(t, claimer.call(phone, claimReq(dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, kt, phone, claimer.account("2"), newOwner)), dict.ReasonClaimTypeInconsistent)
	c := wantStatus(t, claimer.call(phone, claimReq(dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP, kt, phone, claimer.account("2"), newOwner)), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)
	if !c.GetCompletionPeriodEnd().AsTime().Equal(h.clock.Now().Add(14 * 24 * time.Hour)) {
		t.Errorf("completion_period_end = %s", c.GetCompletionPeriodEnd().AsTime())
	}
	wantNotice(t, donor, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)

	confirmDefault := func() *dictv1.DirectoryResponse {
		return donor.call(phone, actionReq(c.GetId(), phone, dictv1.ClaimAction_CLAIM_ACTION_CONFIRM, dictv1.Reason_REASON_DEFAULT_OPERATION))
	}
	wantReason(t, confirmDefault(), dict.ReasonClaimResolutionPeriodNotEnded)
	wantReason(t, donor.call(phone, actionReq(c.GetId(), phone, dictv1.ClaimAction_CLAIM_ACTION_CANCEL, dictv1.Reason_REASON_USER_REQUESTED)), dict.ReasonClaimOperationInvalid)
	h.clock.Add(7*24*time.Hour + time.Minute)
	wantStatus(t, confirmDefault(), dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	wantNotice(t, claimer, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)

	complete := func() *dictv1.DirectoryResponse {
		return claimer.call(phone, actionReq(c.GetId(), phone, dictv1.ClaimAction_CLAIM_ACTION_COMPLETE, 0))
	}
	wantReason(t, complete(), dict.ReasonClaimCompletionPeriodNotEnded)
	h.clock.Add(7 * 24 * time.Hour)
	wantStatus(t, complete(), dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	wantNotice(t, donor, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	r := donor.call(phone, lookupReq(phone, newCPF()))
	wantOK(t, r)
	if r.GetEntry().GetOwner().GetTaxId() != newOwner.GetTaxId() || r.GetEntry().GetAccount().GetParticipant() != claimer.ispb {
		t.Errorf("entry after ownership claim = %v", r.GetEntry())
	}
}

func TestCancelAfterConfirmRestoresDonorEntry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, dictsim.Config{})
	donor, claimer := h.participant(), h.participant()
	owner := natural("Clara")
	phone := newPhone()
	const kt = dictv1.KeyType_KEY_TYPE_PHONE
	before := donor.call(phone, createReq(kt, phone, donor.account("1"), owner)).GetEntry()
	c := wantStatus(t, claimer.call(phone, claimReq(dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, kt, phone, claimer.account("2"), owner)), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)
	wantStatus(t, donor.call(phone, actionReq(c.GetId(), phone, dictv1.ClaimAction_CLAIM_ACTION_CONFIRM, dictv1.Reason_REASON_ACCOUNT_CLOSURE)), dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	got := wantStatus(t, claimer.call(phone, actionReq(c.GetId(), phone, dictv1.ClaimAction_CLAIM_ACTION_CANCEL, dictv1.Reason_REASON_USER_REQUESTED)), dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED)
	if got.GetCancelReason() != dictv1.Reason_REASON_USER_REQUESTED {
		t.Errorf("cancel_reason = %s", got.GetCancelReason())
	}
	wantNotice(t, donor, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)
	wantNotice(t, donor, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED)
	r := claimer.call(phone, lookupReq(phone, newCPF()))
	wantOK(t, r)
	if r.GetEntry().GetAccount().GetParticipant() != donor.ispb || r.GetEntry().GetCid() != before.GetCid() {
		t.Errorf("restored entry = %v, want %v", r.GetEntry(), before)
	}
}
