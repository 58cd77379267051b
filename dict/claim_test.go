package dict_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/dict"
)

func TestClaimPeriods(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, test := range []struct {
		typ                      dict.ClaimType
		wantResolution, wantComp time.Time
	}{
		{dict.ClaimTypeOwnership, created.AddDate(0, 0, 7), created.AddDate(0, 0, 14)},
		{dict.ClaimTypePortability, created.AddDate(0, 0, 7), created.AddDate(0, 0, 7)},
	} {
		r, c := dict.ClaimPeriods(test.typ, created)
		if !r.Equal(test.wantResolution) || !c.Equal(test.wantComp) {
			t.Errorf("ClaimPeriods(%s) = %s, %s; want %s, %s", test.typ, r, c, test.wantResolution, test.wantComp)
		}
	}
}

func TestCheckClaimType(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		typ       dict.ClaimType
		key       dict.KeyType
		sameOwner bool
		want      string // reason, "" when allowed
	}{
		{dict.ClaimTypePortability, dict.KeyTypeCPF, true, ""},
		{dict.ClaimTypePortability, dict.KeyTypeCNPJ, true, ""},
		{dict.ClaimTypePortability, dict.KeyTypePhone, true, ""},
		{dict.ClaimTypePortability, dict.KeyTypeEmail, true, ""},
		{dict.ClaimTypePortability, dict.KeyTypeEVP, true, dict.ReasonClaimTypeInconsistent},
		{dict.ClaimTypePortability, dict.KeyTypePhone, false, dict.ReasonClaimTypeInconsistent},
		{dict.ClaimTypeOwnership, dict.KeyTypePhone, false, ""},
		{dict.ClaimTypeOwnership, dict.KeyTypeEmail, false, ""},
		{dict.ClaimTypeOwnership, dict.KeyTypeCPF, false, dict.ReasonClaimTypeInconsistent},
		{dict.ClaimTypeOwnership, dict.KeyTypeEVP, false, dict.ReasonClaimTypeInconsistent},
		{dict.ClaimTypeOwnership, dict.KeyTypePhone, true, dict.ReasonClaimTypeInconsistent},
		{dict.ClaimTypeUnspecified, dict.KeyTypePhone, true, dict.ReasonEntryInvalid},
	} {
		got := dict.ReasonOf(dict.CheckClaimType(test.typ, test.key, test.sameOwner))
		if got != test.want {
			t.Errorf("CheckClaimType(%s, %s, sameOwner=%v) reason = %q, want %q", test.typ, test.key, test.sameOwner, got, test.want)
		}
	}
}

func TestClaimTransition(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	state := func(typ dict.ClaimType, st dict.ClaimStatus) dict.ClaimState {
		r, c := dict.ClaimPeriods(typ, created)
		return dict.ClaimState{Type: typ, Status: st, CreatedAt: created, ResolutionPeriodEnd: r, CompletionPeriodEnd: c}
	}
	const (
		P = dict.ClaimTypePortability
		O = dict.ClaimTypeOwnership

		open    = dict.ClaimStatusOpen
		waiting = dict.ClaimStatusWaitingResolution
		conf    = dict.ClaimStatusConfirmed
		canc    = dict.ClaimStatusCancelled
		done    = dict.ClaimStatusCompleted

		claimer = dict.ClaimSideClaimer
		donor   = dict.ClaimSideDonor
		nobody  = dict.ClaimSideNone

		ack      = dict.ClaimActionAcknowledge
		confirm  = dict.ClaimActionConfirm
		cancel   = dict.ClaimActionCancel
		complete = dict.ClaimActionComplete

		none    = dict.ReasonUnspecified
		user    = dict.ReasonUserRequested
		closure = dict.ReasonAccountClosure
		branch  = dict.ReasonBranchTransfer
		recon   = dict.ReasonReconciliation
		fraud   = dict.ReasonFraud
		rfb     = dict.ReasonRFBValidation
		def     = dict.ReasonDefaultOperation
	)
	day := func(d float64) time.Time { return created.Add(time.Duration(d * 24 * float64(time.Hour))) }
	const (
		invalidOp  = dict.ReasonClaimOperationInvalid
		resolution = dict.ReasonClaimResolutionPeriodNotEnded
		completion = dict.ReasonClaimCompletionPeriodNotEnded
	)
	for _, test := range []struct {
		name   string
		typ    dict.ClaimType
		status dict.ClaimStatus
		side   dict.ClaimSide
		action dict.ClaimAction
		reason dict.Reason
		now    time.Time
		want   dict.ClaimOutcome
		err    string // reason
		kind   dict.Kind
	}{
		// Acknowledge.
		{"donor acknowledges", P, open, donor, ack, none, day(1), dict.ClaimOutcome{Status: waiting}, "", 0},
		{"claimer cannot acknowledge", P, open, claimer, ack, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},
		{"acknowledge twice", O, waiting, donor, ack, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},
		{"stranger", P, open, nobody, ack, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},

		// Confirm.
		{"donor confirms open portability", P, open, donor, confirm, user, day(1), dict.ClaimOutcome{Status: conf, Effect: dict.ClaimEffectRemoveDonorEntry}, "", 0},
		{"donor confirms waiting, account closed", O, waiting, donor, confirm, closure, day(1), dict.ClaimOutcome{Status: conf, Effect: dict.ClaimEffectRemoveDonorEntry}, "", 0},
		{"claimer cannot confirm", P, open, claimer, confirm, user, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},
		{"confirm twice", P, conf, donor, confirm, user, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},
		{"confirm cancelled", P, canc, donor, confirm, user, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},
		{"confirm with fraud", P, open, donor, confirm, fraud, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindInvalid},
		{"confirm without reason", P, open, donor, confirm, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindInvalid},
		{"ownership default before day 7", O, open, donor, confirm, def, day(6.9), dict.ClaimOutcome{}, resolution, dict.KindPrecondition},
		{"ownership default at day 7", O, open, donor, confirm, def, day(7), dict.ClaimOutcome{Status: conf, Effect: dict.ClaimEffectRemoveDonorEntry}, "", 0},
		{"portability never confirmed by default", P, open, donor, confirm, def, day(8), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},

		// Cancel by the claimer.
		{"claimer cancels, user", P, open, claimer, cancel, user, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"claimer cancels, closure", O, waiting, claimer, cancel, closure, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"claimer cancels, fraud", P, open, claimer, cancel, fraud, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"claimer cancels, reconciliation", P, open, claimer, cancel, recon, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"claimer cancels, rfb", P, open, claimer, cancel, rfb, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"claimer cancels confirmed, donor's entry back", P, conf, claimer, cancel, user, day(1), dict.ClaimOutcome{Status: canc, Effect: dict.ClaimEffectRestoreDonorEntry}, "", 0},
		{"claimer default ownership after day 30", O, conf, claimer, cancel, def, day(30), dict.ClaimOutcome{Status: canc, Effect: dict.ClaimEffectRestoreDonorEntry}, "", 0},
		{"claimer default ownership before day 30", O, conf, claimer, cancel, def, day(29), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},
		{"claimer default portability", P, open, claimer, cancel, def, day(31), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},
		{"cancel with branch transfer", P, open, claimer, cancel, branch, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindInvalid},
		{"cancel completed", P, done, claimer, cancel, user, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},
		{"cancel cancelled", O, canc, donor, cancel, fraud, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},

		// Cancel by the donor.
		{"donor cancels portability, user", P, open, donor, cancel, user, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"donor cancels ownership, user", O, open, donor, cancel, user, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},
		{"donor cancels ownership, fraud", O, waiting, donor, cancel, fraud, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"donor cancels, closure", O, open, donor, cancel, closure, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"donor cancels, reconciliation", P, open, donor, cancel, recon, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"donor cancels, rfb", O, open, donor, cancel, rfb, day(1), dict.ClaimOutcome{Status: canc}, "", 0},
		{"donor default portability after day 7", P, waiting, donor, cancel, def, day(7), dict.ClaimOutcome{Status: canc}, "", 0},
		{"donor default portability before day 7", P, waiting, donor, cancel, def, day(6), dict.ClaimOutcome{}, resolution, dict.KindPrecondition},
		{"donor default ownership", O, open, donor, cancel, def, day(8), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},

		// Complete.
		{"claimer completes portability at once", P, conf, claimer, complete, none, day(0.1), dict.ClaimOutcome{Status: done, Effect: dict.ClaimEffectCreateClaimerEntry}, "", 0},
		{"claimer completes ownership after day 14", O, conf, claimer, complete, none, day(14), dict.ClaimOutcome{Status: done, Effect: dict.ClaimEffectCreateClaimerEntry}, "", 0},
		{"claimer completes ownership before day 14", O, conf, claimer, complete, none, day(13), dict.ClaimOutcome{}, completion, dict.KindPrecondition},
		{"donor cannot complete", P, conf, donor, complete, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPermissionDenied},
		{"complete unconfirmed", P, waiting, claimer, complete, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},
		{"complete twice", P, done, claimer, complete, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindPrecondition},

		{"unknown action", P, open, donor, dict.ClaimActionUnspecified, none, day(1), dict.ClaimOutcome{}, invalidOp, dict.KindInvalid},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := dict.ClaimTransition(state(test.typ, test.status), test.side, test.action, test.reason, test.now)
			if test.err == "" {
				if err != nil {
					t.Fatalf("ClaimTransition: %v", err)
				}
				if diff := cmp.Diff(test.want, got); diff != "" {
					t.Errorf("outcome mismatch (-want +got):\n%s", diff)
				}
				return
			}
			var e *dict.Error
			if !errors.As(err, &e) {
				t.Fatalf("ClaimTransition = %+v, %v; want a *dict.Error with reason %s", got, err, test.err)
			}
			if e.Reason != test.err || e.Kind != test.kind {
				t.Errorf("ClaimTransition error = %s/%s (%s); want %s/%s", e.Reason, e.Kind, e.Msg, test.err, test.kind)
			}
		})
	}
}
