package dictsim

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim/store"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// operation is one request being decided: it fills res's result, or
// returns a *dict.Error refusal.
type operation struct {
	sim    *Sim
	q      *store.Queries
	req    *dictv1.DirectoryRequest
	now    time.Time
	res    *dictv1.DirectoryResponse
	notice *dictv1.DirectoryNotice
}

func (o *operation) run(ctx context.Context) error {
	if !dict.IsISPB(o.req.GetParticipant()) {
		return dict.Invalid("participant", "participant must be the sender's 8-digit ISPB")
	}
	if !isWrite(o.req) || o.req.GetRequestId() == "" {
		return o.apply(ctx)
	}
	// RequestId idempotency: the same id with the same data gets the first
	// successful answer; with other data, RequestIdAlreadyUsed.
	fp, err := fingerprint(o.req)
	if err != nil {
		return err
	}
	if err := o.q.LockKey(ctx, "req:"+o.req.GetParticipant()+":"+o.req.GetRequestId()); err != nil {
		return err
	}
	prior, err := o.q.GetRequestID(ctx, store.GetRequestIDParams{Participant: o.req.GetParticipant(), RequestID: o.req.GetRequestId()})
	switch {
	case err == nil:
		if !bytes.Equal(prior.Fingerprint, fp) || prior.Operation != operationName(o.req) {
			return dict.E(dict.KindConflict, dict.ReasonRequestIDAlreadyUsed, "request_id %s was already used for a request with other data", o.req.GetRequestId())
		}
		first := new(dictv1.DirectoryResponse)
		if err := proto.Unmarshal(prior.Response, first); err != nil {
			return err
		}
		o.res.Result = first.Result
		return nil
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	if err := o.apply(ctx); err != nil {
		return err
	}
	b, err := proto.Marshal(o.res)
	if err != nil {
		return err
	}
	return o.q.InsertRequestID(ctx, store.InsertRequestIDParams{
		Participant: o.req.GetParticipant(), RequestID: o.req.GetRequestId(), Operation: operationName(o.req),
		Fingerprint: fp, Response: b, CreatedAt: o.now,
	})
}

func (o *operation) apply(ctx context.Context) error {
	switch op := o.req.GetOperation().(type) {
	case *dictv1.DirectoryRequest_CreateEntry:
		return o.createEntry(ctx, op.CreateEntry)
	case *dictv1.DirectoryRequest_UpdateEntry:
		return o.updateEntry(ctx, op.UpdateEntry)
	case *dictv1.DirectoryRequest_DeleteEntry:
		return o.deleteEntry(ctx, op.DeleteEntry)
	case *dictv1.DirectoryRequest_GetEntry:
		return o.getEntry(ctx, op.GetEntry)
	case *dictv1.DirectoryRequest_CheckKeys:
		return o.checkKeys(ctx, op.CheckKeys)
	case *dictv1.DirectoryRequest_CreateClaim:
		return o.createClaim(ctx, op.CreateClaim)
	case *dictv1.DirectoryRequest_ClaimAction:
		return o.claimAction(ctx, op.ClaimAction)
	case *dictv1.DirectoryRequest_GetVsync:
		return o.vsync(ctx, op.GetVsync.GetKeyType())
	case *dictv1.DirectoryRequest_ListCids:
		return o.listCids(ctx, op.ListCids.GetKeyType())
	default:
		return dict.Invalid("operation", "the request names no operation")
	}
}

// Conversions between the contract and dict. The enums share their numbers.

func accountIn(a *dictv1.Account) dict.Account {
	if a == nil {
		return dict.Account{}
	}
	return dict.Account{Participant: a.GetParticipant(), Branch: a.GetBranch(), Number: a.GetNumber(),
		Type: dict.AccountType(a.GetType()), OpenedAt: timeIn(a.GetOpenedAt())}
}

func ownerIn(o *dictv1.Owner) dict.Owner {
	if o == nil {
		return dict.Owner{}
	}
	return dict.Owner{Type: dict.OwnerType(o.GetType()), TaxID: o.GetTaxId(), Name: o.GetName(), TradeName: o.GetTradeName()}
}

func timeIn(t *timestamppb.Timestamp) time.Time {
	if t == nil || !t.IsValid() {
		return time.Time{}
	}
	return t.AsTime()
}

func entryFromRow(r store.Entry) dict.Entry {
	kt, _ := dict.ParseKeyType(r.KeyType)
	at, _ := dict.ParseAccountType(r.AccountType)
	ot, _ := dict.ParseOwnerType(r.OwnerType)
	return dict.Entry{
		KeyType: kt, Key: r.Key,
		Account:   dict.Account{Participant: r.Participant, Branch: r.Branch, Number: r.AccountNumber, Type: at, OpenedAt: r.AccountOpenedAt},
		Owner:     dict.Owner{Type: ot, TaxID: r.OwnerTaxID, Name: r.OwnerName, TradeName: r.OwnerTradeName},
		Status:    dict.EntryStatusActive,
		CreatedAt: r.CreatedAt, KeyOwnedSince: r.KeyOwnedSince, UpdatedAt: r.UpdatedAt,
		CID: r.Cid, RequestID: r.RequestID,
	}
}

func entryFromProto(p *dictv1.Entry) dict.Entry {
	e := dict.Entry{
		KeyType: dict.KeyType(p.GetKeyType()), Key: p.GetKey(),
		Account: accountIn(p.GetAccount()), Owner: ownerIn(p.GetOwner()),
		Status:    dict.EntryStatusActive,
		CreatedAt: timeIn(p.GetCreatedAt()), KeyOwnedSince: timeIn(p.GetKeyOwnedSince()), UpdatedAt: timeIn(p.GetUpdatedAt()),
		CID: p.GetCid(),
	}
	e.RequestID, _ = dict.ParseRequestID(p.GetRequestId())
	return e
}

func insertParams(e dict.Entry) (store.InsertEntryParams, error) {
	w, err := dict.CIDWords(e.CID)
	if err != nil {
		return store.InsertEntryParams{}, err
	}
	return store.InsertEntryParams{
		Key: e.Key, KeyType: e.KeyType.String(), Participant: e.Account.Participant, Branch: e.Account.Branch,
		AccountNumber: e.Account.Number, AccountType: e.Account.Type.String(), AccountOpenedAt: e.Account.OpenedAt,
		OwnerType: e.Owner.Type.String(), OwnerTaxID: e.Owner.TaxID, OwnerName: e.Owner.Name, OwnerTradeName: e.Owner.TradeName,
		CreatedAt: e.CreatedAt, KeyOwnedSince: e.KeyOwnedSince, UpdatedAt: e.UpdatedAt,
		RequestID: e.RequestID, Cid: e.CID, CidW0: w[0], CidW1: w[1], CidW2: w[2], CidW3: w[3],
	}, nil
}

// entry returns the entry of key, or ok false.
func (o *operation) entry(ctx context.Context, key string) (dict.Entry, bool, error) {
	r, err := o.q.GetEntry(ctx, key)
	if errors.Is(err, pgx.ErrNoRows) {
		return dict.Entry{}, false, nil
	}
	if err != nil {
		return dict.Entry{}, false, err
	}
	return entryFromRow(r), true, nil
}

// openClaim returns the open claim over key, or ok false.
func (o *operation) openClaim(ctx context.Context, key string) (store.Claim, bool, error) {
	c, err := o.q.OpenClaimForKey(ctx, key)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil
	}
	return c, err == nil, err
}

// checkLimit refuses a new key for an account that already holds the
// most keys its owner type allows.
func (o *operation) checkLimit(ctx context.Context, a dict.Account, t dict.OwnerType) error {
	if err := o.q.LockKey(ctx, "account:"+a.Participant+":"+a.Branch+":"+a.Number+":"+a.Type.String()); err != nil {
		return err
	}
	n, err := o.q.CountAccountEntries(ctx, store.CountAccountEntriesParams{
		Participant: a.Participant, Branch: a.Branch, AccountNumber: a.Number, AccountType: a.Type.String()})
	if err != nil {
		return err
	}
	if max := dict.MaxKeysPerAccount(t); n >= int64(max) {
		return dict.E(dict.KindPrecondition, dict.ReasonEntryLimitExceeded, "the account already holds %d keys, the most a %s may have", n, t)
	}
	return nil
}

func (o *operation) createEntry(ctx context.Context, in *dictv1.DirCreateEntry) error {
	reqID, err := dict.ParseRequestID(o.req.GetRequestId())
	if err != nil {
		return err
	}
	e, err := dict.NormalizeNewEntry(dict.CreateKeyInput{
		KeyType: dict.KeyType(in.GetKeyType()), Key: in.GetKey(), Account: accountIn(in.GetAccount()), Owner: ownerIn(in.GetOwner())})
	if err != nil {
		return err
	}
	if e.Account.Participant != o.req.GetParticipant() {
		return dict.Invalid("account.participant", "the account must be at the sending participant %s", o.req.GetParticipant())
	}
	if e.KeyType == dict.KeyTypeEVP {
		e.Key = dict.NewEVP()
	}
	if err := o.q.LockKey(ctx, "key:"+e.Key); err != nil {
		return err
	}
	if _, locked, err := o.openClaim(ctx, e.Key); err != nil {
		return err
	} else if locked {
		return dict.E(dict.KindPrecondition, dict.ReasonEntryLockedByClaim, "the key is under an open claim")
	}
	if held, ok, err := o.entry(ctx, e.Key); err != nil {
		return err
	} else if ok {
		switch {
		case held.Account.Participant == o.req.GetParticipant():
			return dict.E(dict.KindConflict, dict.ReasonEntryAlreadyExists, "the key is already registered at this participant")
		case held.Owner.TaxID == e.Owner.TaxID:
			return dict.E(dict.KindConflict, dict.ReasonEntryKeyInCustodyOfDifferentParticipant,
				"the key is registered at another participant for the same owner; open a PORTABILITY claim")
		default:
			return dict.E(dict.KindConflict, dict.ReasonEntryKeyOwnedByDifferentPerson,
				"the key is registered for another owner; open an OWNERSHIP claim")
		}
	}
	if err := o.checkLimit(ctx, e.Account, e.Owner.Type); err != nil {
		return err
	}
	e.Status = dict.EntryStatusActive
	e.CreatedAt, e.KeyOwnedSince, e.UpdatedAt = o.now, o.now, o.now
	e.RequestID = reqID
	e.CID = dict.CID(reqID, e)
	p, err := insertParams(e)
	if err != nil {
		return err
	}
	if err := o.q.InsertEntry(ctx, p); err != nil {
		return err
	}
	o.res.Result = &dictv1.DirectoryResponse_Entry{Entry: e.Proto()}
	return nil
}

// heldEntry returns the sender's entry of key for a change, refusing a
// key with no entry (EntryNotFound) or another participant's (Forbidden).
func (o *operation) heldEntry(ctx context.Context, raw string) (dict.Entry, error) {
	_, key, err := dict.NormalizeAnyKey(dict.KeyTypeUnspecified, raw)
	if err != nil {
		return dict.Entry{}, err
	}
	if err := o.q.LockKey(ctx, "key:"+key); err != nil {
		return dict.Entry{}, err
	}
	e, ok, err := o.entry(ctx, key)
	if err != nil {
		return e, err
	}
	if !ok {
		if _, locked, err := o.openClaim(ctx, key); err != nil {
			return e, err
		} else if locked {
			return e, dict.E(dict.KindPrecondition, dict.ReasonEntryLockedByClaim, "the key is under an open claim")
		}
		return e, dict.E(dict.KindNotFound, dict.ReasonEntryNotFound, "the key has no entry in the directory")
	}
	if e.Account.Participant != o.req.GetParticipant() {
		return e, dict.E(dict.KindPermissionDenied, dict.ReasonForbidden, "the key is held by another participant; only its holder may change it")
	}
	return e, nil
}

func (o *operation) updateEntry(ctx context.Context, in *dictv1.DirUpdateEntry) error {
	switch dict.Reason(in.GetReason()) {
	case dict.ReasonUserRequested, dict.ReasonBranchTransfer, dict.ReasonReconciliation, dict.ReasonRFBValidation:
	default:
		return dict.Invalid("reason", "update reason must be USER_REQUESTED, BRANCH_TRANSFER, RECONCILIATION or RFB_VALIDATION")
	}
	before, err := o.heldEntry(ctx, in.GetKey())
	if err != nil {
		return err
	}
	acc, err := accountIn(in.GetAccount()).Normalize()
	if err != nil {
		return err
	}
	if acc.Participant != o.req.GetParticipant() {
		return dict.Invalid("account.participant", "the account must stay at the sending participant %s; a key changes participant only by a claim", o.req.GetParticipant())
	}
	owner := ownerIn(in.GetOwner())
	if owner.Type == dict.OwnerTypeUnspecified {
		owner.Type = before.Owner.Type
	}
	if owner.TaxID == "" {
		owner.TaxID = before.Owner.TaxID
	}
	if owner, err = owner.Normalize(); err != nil {
		return err
	}
	if owner.Type != before.Owner.Type || owner.TaxID != before.Owner.TaxID {
		return dict.Invalid("owner.tax_id", "an update may change only the account, the name and the trade name; owner.type and owner.tax_id must stay as registered")
	}
	after := before
	after.Account, after.Owner, after.UpdatedAt = acc, owner, o.now
	if acc.Branch != before.Account.Branch || acc.Number != before.Account.Number || acc.Type != before.Account.Type {
		if err := o.checkLimit(ctx, acc, owner.Type); err != nil {
			return err
		}
	}
	// As core-dict does: the CID stays keyed with the RequestId that created the entry.
	after.CID = dict.CID(before.RequestID, after)
	w, err := dict.CIDWords(after.CID)
	if err != nil {
		return err
	}
	if err := o.q.UpdateEntry(ctx, store.UpdateEntryParams{
		Key: after.Key, Participant: acc.Participant, Branch: acc.Branch, AccountNumber: acc.Number, AccountType: acc.Type.String(),
		AccountOpenedAt: acc.OpenedAt, OwnerName: owner.Name, OwnerTradeName: owner.TradeName, UpdatedAt: o.now,
		Cid: after.CID, CidW0: w[0], CidW1: w[1], CidW2: w[2], CidW3: w[3],
	}); err != nil {
		return err
	}
	o.res.Result = &dictv1.DirectoryResponse_Entry{Entry: after.Proto()}
	return nil
}

func (o *operation) deleteEntry(ctx context.Context, in *dictv1.DirDeleteEntry) error {
	switch dict.Reason(in.GetReason()) {
	case dict.ReasonUserRequested, dict.ReasonAccountClosure, dict.ReasonReconciliation, dict.ReasonFraud, dict.ReasonRFBValidation:
	default:
		return dict.Invalid("reason", "delete reason must be USER_REQUESTED, ACCOUNT_CLOSURE, RECONCILIATION, FRAUD or RFB_VALIDATION")
	}
	e, err := o.heldEntry(ctx, in.GetKey())
	if err != nil {
		return err
	}
	if _, locked, err := o.openClaim(ctx, e.Key); err != nil {
		return err
	} else if locked {
		return dict.E(dict.KindPrecondition, dict.ReasonEntryLockedByClaim, "the key is under an open claim and cannot be deleted")
	}
	if _, err := o.q.DeleteEntry(ctx, e.Key); err != nil {
		return err
	}
	o.res.Result = &dictv1.DirectoryResponse_Deleted{Deleted: &dictv1.DirEntryDeleted{
		KeyType: dictv1.KeyType(e.KeyType), Key: e.Key, Cid: e.CID}}
	return nil
}

func (o *operation) getEntry(ctx context.Context, in *dictv1.DirGetEntry) error {
	_, key, err := dict.NormalizeAnyKey(dict.KeyTypeUnspecified, in.GetKey())
	if err != nil {
		return err
	}
	payerType, payerID, err := dict.NormalizeTaxIDAnyType("payer_id", in.GetPayerId())
	if err != nil {
		return err
	}
	if e2e := in.GetEndToEndId(); e2e != "" {
		if err := dict.ValidateEndToEndID(e2e, o.req.GetParticipant()); err != nil {
			return err
		}
	}
	as := o.sim.antiScanFor(o.req.GetParticipant())
	if err := as.Admit(ctx, o.req.GetParticipant(), payerType, payerID); err != nil {
		return err
	}
	e, found, err := o.entry(ctx, key)
	if err != nil {
		return err
	}
	if err := as.Settle(ctx, o.req.GetParticipant(), payerType, payerID, found); err != nil {
		return err
	}
	if !found {
		return dict.E(dict.KindNotFound, dict.ReasonEntryNotFound, "the key has no entry in the directory")
	}
	if _, locked, err := o.openClaim(ctx, key); err != nil {
		return err
	} else if locked {
		e.Status = dict.EntryStatusLockedByClaim
	}
	o.res.Result = &dictv1.DirectoryResponse_Entry{Entry: e.Proto()}
	return nil
}

func (s *Sim) antiScanFor(participant string) *dict.AntiScan {
	if cat, ok := s.cfg.Categories[participant]; ok {
		return s.antiScan[cat]
	}
	return s.antiScan[s.cfg.DefaultCategory]
}

func (o *operation) checkKeys(ctx context.Context, in *dictv1.DirCheckKeys) error {
	raw := in.GetKeys()
	if len(raw) == 0 || len(raw) > dict.MaxCheckKeys {
		return dict.Invalid("keys", "check_keys takes 1 to %d keys; got %d", dict.MaxCheckKeys, len(raw))
	}
	out := make([]*dictv1.KeyExistence, len(raw))
	keys := make([]string, 0, len(raw))
	for i, r := range raw {
		out[i] = &dictv1.KeyExistence{Key: r}
		if _, k, err := dict.NormalizeAnyKey(dict.KeyTypeUnspecified, r); err == nil {
			out[i].Key = k
			keys = append(keys, k)
		}
	}
	found, err := o.q.ExistingKeys(ctx, keys)
	if err != nil {
		return err
	}
	has := make(map[string]bool, len(found))
	for _, k := range found {
		has[k] = true
	}
	for _, e := range out {
		e.HasEntry = has[e.Key]
	}
	o.res.Result = &dictv1.DirectoryResponse_CheckKeys{CheckKeys: &dictv1.DirCheckKeysResult{Keys: out}}
	return nil
}

func validKeyType(t dictv1.KeyType) (dict.KeyType, error) {
	kt := dict.KeyType(t)
	if _, ok := dict.ParseKeyType(kt.String()); !ok {
		return kt, dict.Invalid("key_type", "key_type must be CPF, CNPJ, PHONE, EMAIL or EVP")
	}
	return kt, nil
}

func (o *operation) vsync(ctx context.Context, t dictv1.KeyType) error {
	kt, err := validKeyType(t)
	if err != nil {
		return err
	}
	r, err := o.q.VSync(ctx, store.VSyncParams{Participant: o.req.GetParticipant(), KeyType: kt.String()})
	if err != nil {
		return err
	}
	o.res.Result = &dictv1.DirectoryResponse_Vsync{Vsync: &dictv1.DirVSync{
		KeyType: t, Vsync: dict.WordsToHex([4]int64{r.W0, r.W1, r.W2, r.W3}), Entries: r.Entries}}
	return nil
}

func (o *operation) listCids(ctx context.Context, t dictv1.KeyType) error {
	kt, err := validKeyType(t)
	if err != nil {
		return err
	}
	rows, err := o.q.ListEntries(ctx, store.ListEntriesParams{Participant: o.req.GetParticipant(), KeyType: kt.String()})
	if err != nil {
		return err
	}
	list := &dictv1.DirCidList{KeyType: t, Entries: make([]*dictv1.DirCidEntry, len(rows))}
	for i, r := range rows {
		list.Entries[i] = &dictv1.DirCidEntry{Cid: r.Cid, Entry: entryFromRow(r).Proto()}
	}
	o.res.Result = &dictv1.DirectoryResponse_Cids{Cids: list}
	return nil
}
