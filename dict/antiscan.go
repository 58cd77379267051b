package dict

import (
	"cmp"
	"context"
	"sync"
	"time"
)

// BucketParams are a token bucket's size and refill rate.
type BucketParams struct {
	Capacity     float64
	RefillTokens float64
	RefillPeriod time.Duration
}

// The DICT's anti-scanning buckets (DOMAIN.md, "Anti-scanning token
// buckets"; DICT API v2.6.1). A PSP must match them or be stricter.
var (
	// UserBucketNatural is the bucket of a payer who is a natural person.
	UserBucketNatural = BucketParams{Capacity: 100, RefillTokens: 2, RefillPeriod: time.Minute}
	// UserBucketLegal is the bucket of a payer who is a legal person.
	UserBucketLegal = BucketParams{Capacity: 1000, RefillTokens: 20, RefillPeriod: time.Minute}
	// ParticipantBuckets is the participant's bucket by its category, A-H.
	ParticipantBuckets = map[string]BucketParams{
		"A": {50000, 25000, time.Minute},
		"B": {40000, 20000, time.Minute},
		"C": {30000, 15000, time.Minute},
		"D": {16000, 8000, time.Minute},
		"E": {5000, 2500, time.Minute},
		"F": {500, 250, time.Minute},
		"G": {250, 25, time.Minute},
		"H": {50, 2, time.Minute},
	}
)

// Costs and credits of the anti-scanning buckets.
const (
	CostFoundUser               = 1
	CostNotFoundUser            = 20
	CostFoundParticipant        = 1
	CostNotFoundParticipant     = 3
	CreditPaymentNaturalPayer   = 1
	CreditPaymentLegalPayer     = 2
	CreditPaymentParticipant    = 1
	minimumLookupCost           = 1 // a lookup is refused when less than this is left
	defaultParticipantCategory  = "H"
	participantBucketKeyPrefix  = "dict:bucket:participant:"
	userBucketKeyPrefix         = "dict:bucket:payer:"
	paymentCreditDedupKeyPrefix = "dict:credit:"
)

// BucketDecision is a token bucket's answer.
type BucketDecision struct {
	Allowed    bool
	Balance    float64
	RetryAfter time.Duration
}

// Buckets is the token-bucket store the anti-scanning policy runs on
// (cachelayer's Lua bucket in production, with its in-process fallback).
type Buckets interface {
	// Check reports whether at least min tokens are available, changing nothing.
	Check(ctx context.Context, key string, p BucketParams, min float64) (BucketDecision, error)
	// Charge deducts cost; the balance may go below zero.
	Charge(ctx context.Context, key string, p BucketParams, cost float64) (BucketDecision, error)
	// Credit adds amount, up to the capacity.
	Credit(ctx context.Context, key string, p BucketParams, amount float64) (BucketDecision, error)
}

// AntiScan applies the DICT's anti-scanning policy to lookups: before a
// lookup, the payer's bucket must hold at least one token, and before a
// lookup is sent to the DICT, the participant's too; after it, a found key
// costs the payer 1 and a key not found 20, and a lookup sent costs the
// participant 1 (found) or 3 (not found); a payment sent credits 1
// (natural person) or 2 (legal person) and, when its lookup was sent, 1.
//
// The participant's bucket mirrors the DICT's, which counts only the
// lookups it receives: lookups of the PSP's own keys (never sent, DOMAIN.md)
// and answers from the directory cache are not charged to it. They are
// charged to the payer's bucket all the same (stricter than the DICT, which
// DOMAIN.md allows), so neither own keys nor the cache open a way around
// the per-payer anti-scanning.
type AntiScan struct {
	buckets     Buckets
	participant BucketParams
}

// NewAntiScan returns the policy for a participant of category (A-H).
func NewAntiScan(b Buckets, category string) (*AntiScan, bool) {
	p, ok := ParticipantBuckets[category]
	if !ok {
		return nil, false
	}
	return &AntiScan{buckets: b, participant: p}, true
}

func userBucket(payerType OwnerType) BucketParams {
	if payerType == OwnerTypeLegalPerson {
		return UserBucketLegal
	}
	return UserBucketNatural
}

// BucketTaker is a [Buckets] that also checks and deducts in one step:
// Take deducts cost only when at least cost tokens are there (cachelayer's
// token bucket does, in one Redis call). [AntiScan] uses it, when the store
// has it, for lookups answered from this PSP's own data.
type BucketTaker interface {
	Take(ctx context.Context, key string, p BucketParams, cost float64) (BucketDecision, error)
}

func payerBucketKey(payerID string) string { return userBucketKeyPrefix + "{" + payerID + "}" }

func participantBucketKey(participant string) string {
	return participantBucketKeyPrefix + "{" + participant + "}"
}

func refused(who string, d BucketDecision) error {
	return &Error{Kind: KindRateLimited, Reason: ReasonRateLimited, RetryAfter: d.RetryAfter,
		Msg: "lookup refused: the anti-scanning bucket of " + who + " is empty; retry after " + d.RetryAfter.Round(time.Second).String()}
}

// Admit refuses a lookup that would exceed the payer's or the participant's
// bucket, before anything is looked up: the payer's bucket first. It is the
// DICT's admission of a lookup it receives (dictsim); core-dict admits in
// two steps ([AntiScan.AdmitPayer], [AntiScan.AdmitParticipant]).
func (a *AntiScan) Admit(ctx context.Context, participant string, payerType OwnerType, payerID string) error {
	if err := a.AdmitPayer(ctx, payerType, payerID); err != nil {
		return err
	}
	return a.AdmitParticipant(ctx, participant)
}

// AdmitPayer refuses a lookup when the payer's bucket holds less than one
// token, before anything is looked up or sent.
func (a *AntiScan) AdmitPayer(ctx context.Context, payerType OwnerType, payerID string) error {
	d, err := a.buckets.Check(ctx, payerBucketKey(payerID), userBucket(payerType), minimumLookupCost)
	if err != nil {
		return Internal("anti-scan check", err)
	}
	if !d.Allowed {
		return refused("the payer", d)
	}
	return nil
}

// AdmitParticipant refuses a lookup about to be sent to the DICT when the
// participant's bucket holds less than one token. The participant's bucket
// is the DICT's count of the lookups this PSP sends it: a lookup answered
// here (an own key, a cached answer) is neither admitted nor charged there.
func (a *AntiScan) AdmitParticipant(ctx context.Context, participant string) error {
	d, err := a.buckets.Check(ctx, participantBucketKey(participant), a.participant, minimumLookupCost)
	if err != nil {
		return Internal("anti-scan check", err)
	}
	if !d.Allowed {
		return refused("the participant", d)
	}
	return nil
}

// TakeAnswered admits and charges, in one step when the store can
// ([BucketTaker]), a lookup answered here (an own key, or a cached answer
// of the directory): the key is found, so it costs the payer 1; it is
// refused, and costs nothing, when the payer's bucket holds less than one
// token. The participant's bucket is not involved (the DICT never sees the
// lookup).
func (a *AntiScan) TakeAnswered(ctx context.Context, payerType OwnerType, payerID string) error {
	key, p := payerBucketKey(payerID), userBucket(payerType)
	if t, ok := a.buckets.(BucketTaker); ok {
		d, err := t.Take(ctx, key, p, CostFoundUser)
		if err != nil {
			return Internal("anti-scan take", err)
		}
		if !d.Allowed {
			return refused("the payer", d)
		}
		return nil
	}
	if err := a.AdmitPayer(ctx, payerType, payerID); err != nil {
		return err
	}
	if _, err := a.buckets.Charge(ctx, key, p, CostFoundUser); err != nil {
		return Internal("anti-scan charge", err)
	}
	return nil
}

// Settle charges a lookup's real cost once its answer is known, to the
// payer's bucket and the participant's (the DICT's charge of a lookup it
// answered).
func (a *AntiScan) Settle(ctx context.Context, participant string, payerType OwnerType, payerID string, found bool) error {
	return a.SettleLookup(ctx, participant, payerType, payerID, found, true)
}

// SettleLookup charges a lookup's real cost once its answer is known: to
// the payer's bucket always (found 1, not found 20), and to the
// participant's (found 1, not found 3) when the lookup was sent to the
// DICT. The two charges go out together (one round trip on Redis, which
// pipelines concurrent calls).
func (a *AntiScan) SettleLookup(ctx context.Context, participant string, payerType OwnerType, payerID string, found, sent bool) error {
	user, part := float64(CostFoundUser), float64(CostFoundParticipant)
	if !found {
		user, part = CostNotFoundUser, CostNotFoundParticipant
	}
	var partErr error
	var wg sync.WaitGroup
	if sent {
		wg.Go(func() { _, partErr = a.buckets.Charge(ctx, participantBucketKey(participant), a.participant, part) })
	}
	_, userErr := a.buckets.Charge(ctx, payerBucketKey(payerID), userBucket(payerType), user)
	wg.Wait()
	if err := cmp.Or(userErr, partErr); err != nil {
		return Internal("anti-scan charge", err)
	}
	return nil
}

// CreditPayment credits the buckets for a payment sent after a lookup: the
// payer's 1 (natural person) or 2 (legal person), and the participant's 1
// when the lookup was charged to it (sent to the DICT).
func (a *AntiScan) CreditPayment(ctx context.Context, participant string, payerType OwnerType, payerID string, participantCharged bool) error {
	amount := float64(CreditPaymentNaturalPayer)
	if payerType == OwnerTypeLegalPerson {
		amount = CreditPaymentLegalPayer
	}
	if _, err := a.buckets.Credit(ctx, payerBucketKey(payerID), userBucket(payerType), amount); err != nil {
		return Internal("anti-scan credit", err)
	}
	if !participantCharged {
		return nil
	}
	if _, err := a.buckets.Credit(ctx, participantBucketKey(participant), a.participant, CreditPaymentParticipant); err != nil {
		return Internal("anti-scan credit", err)
	}
	return nil
}
