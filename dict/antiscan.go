package dict

import (
	"context"
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
// lookup, both the payer's bucket and the participant's must hold at least
// one token; after it, a found key costs 1 and 1, a key not found 20 and 3;
// a payment sent credits 1 (natural person) or 2 (legal person) and 1.
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

// Admit refuses a lookup that would exceed the payer's or the participant's
// bucket, before anything is looked up.
func (a *AntiScan) Admit(ctx context.Context, participant string, payerType OwnerType, payerID string) error {
	for _, b := range []struct {
		key, who string
		p        BucketParams
	}{
		{userBucketKeyPrefix + "{" + payerID + "}", "the payer", userBucket(payerType)},
		{participantBucketKeyPrefix + "{" + participant + "}", "the participant", a.participant},
	} {
		d, err := a.buckets.Check(ctx, b.key, b.p, minimumLookupCost)
		if err != nil {
			return Internal("anti-scan check", err)
		}
		if !d.Allowed {
			return &Error{Kind: KindRateLimited, Reason: ReasonRateLimited, RetryAfter: d.RetryAfter,
				Msg: "lookup refused: the anti-scanning bucket of " + b.who + " is empty; retry after " + d.RetryAfter.Round(time.Second).String()}
		}
	}
	return nil
}

// Settle charges a lookup's real cost once its answer is known.
func (a *AntiScan) Settle(ctx context.Context, participant string, payerType OwnerType, payerID string, found bool) error {
	user, part := float64(CostFoundUser), float64(CostFoundParticipant)
	if !found {
		user, part = CostNotFoundUser, CostNotFoundParticipant
	}
	if _, err := a.buckets.Charge(ctx, userBucketKeyPrefix+"{"+payerID+"}", userBucket(payerType), user); err != nil {
		return Internal("anti-scan charge", err)
	}
	if _, err := a.buckets.Charge(ctx, participantBucketKeyPrefix+"{"+participant+"}", a.participant, part); err != nil {
		return Internal("anti-scan charge", err)
	}
	return nil
}

// CreditPayment credits the buckets for a payment sent after a lookup.
func (a *AntiScan) CreditPayment(ctx context.Context, participant string, payerType OwnerType, payerID string) error {
	amount := float64(CreditPaymentNaturalPayer)
	if payerType == OwnerTypeLegalPerson {
		amount = CreditPaymentLegalPayer
	}
	if _, err := a.buckets.Credit(ctx, userBucketKeyPrefix+"{"+payerID+"}", userBucket(payerType), amount); err != nil {
		return Internal("anti-scan credit", err)
	}
	if _, err := a.buckets.Credit(ctx, participantBucketKeyPrefix+"{"+participant+"}", a.participant, CreditPaymentParticipant); err != nil {
		return Internal("anti-scan credit", err)
	}
	return nil
}
