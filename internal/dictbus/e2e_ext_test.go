package dictbus_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// TestEndToEndPortabilityLookupAndVSync runs a key's life across three
// participants: A registers a CPF key, B ports it away from A, and C, a
// third participant, then finds it at B's account, with the CPF masked in
// the payer's view; both sides' VSyncs agree with the directory's, and
// registrations colliding with another participant's keys end FAILED with
// the directory's reason.
func TestEndToEndPortabilityLookupAndVSync(t *testing.T) {
	t.Parallel()
	w := newFullWorld(t, fullOpts{withC: true})
	a, b, c := w.a, w.b, w.c
	cpf := newCPF()
	owner := person(cpf, "Maria da Silva")
	maskedCPF := "***." + cpf[3:6] + "." + cpf[6:9] + "-**"
	aEntry := a.register(t, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)

	// Before the claim, C finds the key at A.
	res, err := c.lookup(cpf, newCPF())
	if err != nil {
		t.Fatalf("C's lookup before the claim: %v", err)
	}
	if got := res.GetEntry().GetAccount(); got.GetParticipant() != ispbA || got.GetNumber() != aEntry.GetAccount().GetNumber() {
		t.Fatalf("C's lookup before the claim: account %v, want A's %v", got, aEntry.GetAccount())
	}

	// A keeps two other keys, so that its VSyncs are not all zero.
	phone := newPhone()
	phoneOwner := person(newCPF(), "Jose Antigo")
	a.register(t, dictv1.KeyType_KEY_TYPE_PHONE, phone, phoneOwner)
	email := "e2e-" + randDigits(8) + "@example.com.br"
	a.register(t, dictv1.KeyType_KEY_TYPE_EMAIL, email, owner)

	// B's portability: seen by A, acknowledged and confirmed by A,
	// completed by B.
	id, claimerAcc := w.openClaim(t, dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)
	a.waitKey(t, cpf, dictv1.EntryStatus_ENTRY_STATUS_LOCKED_BY_CLAIM)
	mustCall(t, a, a.client.AcknowledgeClaim, &dictv1.AcknowledgeClaimRequest{Id: id})
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)
	mustCall(t, a, a.client.ConfirmClaim, &dictv1.ConfirmClaimRequest{Id: id, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	a.waitNoKey(t, cpf)
	completeID := uuid.NewString()
	mustCall(t, b, b.client.CompleteClaim, &dictv1.CompleteClaimRequest{Id: id, RequestId: completeID})
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	bEntry := b.waitKey(t, cpf, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)

	// C now finds the key at B's account; the payer sees the name and the
	// masked CPF only.
	res, err = c.lookup(cpf, newCPF())
	if err != nil {
		t.Fatalf("C's lookup after the claim: %v", err)
	}
	acc := res.GetEntry().GetAccount()
	if acc.GetParticipant() != ispbB || acc.GetNumber() != claimerAcc.GetNumber() || acc.GetBranch() != claimerAcc.GetBranch() {
		t.Fatalf("C's lookup after the claim: account %v, want B's %v", acc, claimerAcc)
	}
	pv := res.GetPayerView()
	if pv.GetTaxIdMasked() != maskedCPF || pv.GetName() != "Maria da Silva" || pv.GetParticipantName() != "Banco B" {
		t.Fatalf("payer view %v, want tax id %s, name Maria da Silva, participant Banco B", pv, maskedCPF)
	}
	if pv.GetKey() != cpf {
		t.Errorf("payer view key %q, want the key looked up %q", pv.GetKey(), cpf)
	}
	// The payer view may show the key, but the tax id field never carries
	// the full CPF.
	if m := pv.GetTaxIdMasked(); len(m) != 14 || m[:3] != "***" || m[12:] != "**" || strings.Count(m, "*") != 5 {
		t.Fatalf("payer view tax id %q shows masked digits of %s", pv.GetTaxIdMasked(), cpf)
	}
	// A's entry is gone: GetKey does not find it, and A's own lookup goes to
	// the directory and finds B's.
	if _, err := a.key(t, cpf); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("A's GetKey after the portability: %v, want NotFound", err)
	}
	if res, err := a.lookup(cpf, newCPF()); err != nil || res.GetEntry().GetAccount().GetParticipant() != ispbB {
		t.Fatalf("A's lookup after the portability: %v %v, want B's account", res.GetEntry().GetAccount(), err)
	}

	// Registrations of keys another participant holds end FAILED with the
	// directory's reason: another owner, OWNERSHIP; the same owner,
	// PORTABILITY.
	for _, test := range []struct {
		name   string
		kt     dictv1.KeyType
		key    string
		owner  *dictv1.Owner
		reason string
	}{
		{"another owner's phone", dictv1.KeyType_KEY_TYPE_PHONE, phone, person(newCPF(), "Ana Nova"), dict.ReasonEntryKeyOwnedByDifferentPerson},
		{"the same owner's email", dictv1.KeyType_KEY_TYPE_EMAIL, email, owner, dict.ReasonEntryKeyInCustodyOfDifferentParticipant},
	} {
		created := mustCall(t, b, b.client.CreateKey, &dictv1.CreateKeyRequest{RequestId: uuid.NewString(), KeyType: test.kt, Key: test.key,
			Account: account(ispbB), Owner: test.owner})
		if created.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING {
			t.Fatalf("%s: CreateKey answered %s, want PENDING", test.name, created.GetEntry().GetStatus())
		}
		e := b.waitKey(t, test.key, dictv1.EntryStatus_ENTRY_STATUS_FAILED)
		if e.GetFailureReason() != test.reason {
			t.Errorf("%s: FAILED with %q (%s), want %s", test.name, e.GetFailureReason(), e.GetFailureMessage(), test.reason)
		}
		// The key is still A's.
		if e, err := a.key(t, test.key); err != nil || e.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_ACTIVE {
			t.Errorf("%s: A's entry %v %v, want ACTIVE", test.name, e.GetStatus(), err)
		}
	}

	// VSync per key type: what each side computes from its entries, what it
	// reports through GetSyncStatus and what the directory holds all agree.
	// A holds the phone and the email; B the CPF (its FAILED entries count
	// for nothing).
	aPhone, _ := a.key(t, phone)
	aEmail, _ := a.key(t, email)
	want := map[string]map[dictv1.KeyType][]string{
		ispbA: {dictv1.KeyType_KEY_TYPE_PHONE: {aPhone.GetCid()}, dictv1.KeyType_KEY_TYPE_EMAIL: {aEmail.GetCid()}},
		ispbB: {dictv1.KeyType_KEY_TYPE_CPF: {bEntry.GetCid()}},
	}
	if got := dict.CID(uuid.MustParse(completeID), dict.EntryFromProto(bEntry)); bEntry.GetCid() != got {
		t.Errorf("B's CID %s, want %s", bEntry.GetCid(), got)
	}
	for _, p := range []*pspStack{a, b} {
		st := mustCall(t, p, p.client.GetSyncStatus, &dictv1.GetSyncStatusRequest{})
		if len(st.GetStatuses()) != 5 {
			t.Fatalf("%s: GetSyncStatus reports %d key types, want 5", p.ispb, len(st.GetStatuses()))
		}
		for _, s := range st.GetStatuses() {
			kt := s.GetKeyType()
			local := dict.VSync(want[p.ispb][kt])
			dir := w.dirVSync(t, p.ispb, kt)
			if s.GetVsync() != local || dir.GetVsync() != local || s.GetEntryCount() != dir.GetEntries() ||
				dir.GetEntries() != int64(len(want[p.ispb][kt])) {
				t.Errorf("%s %s: VSync service %s (%d entries), computed %s, directory %s (%d entries)",
					p.ispb, kt, s.GetVsync(), s.GetEntryCount(), local, dir.GetVsync(), dir.GetEntries())
			}
		}
	}
}
