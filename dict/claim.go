package dict

import "time"

// ClaimType is the kind of a claim over a key. Values match dict.v1.ClaimType.
type ClaimType int

const (
	ClaimTypeUnspecified ClaimType = iota
	// ClaimTypePortability moves a key to another participant for the same
	// owner (CPF, CNPJ, PHONE, EMAIL).
	ClaimTypePortability
	// ClaimTypeOwnership gives a key to another owner (PHONE, EMAIL).
	ClaimTypeOwnership
)

func (t ClaimType) String() string {
	switch t {
	case ClaimTypePortability:
		return "PORTABILITY"
	case ClaimTypeOwnership:
		return "OWNERSHIP"
	default:
		return "UNSPECIFIED"
	}
}

// ParseClaimType is the inverse of [ClaimType.String].
func ParseClaimType(s string) (ClaimType, bool) {
	for _, t := range []ClaimType{ClaimTypePortability, ClaimTypeOwnership} {
		if t.String() == s {
			return t, true
		}
	}
	return ClaimTypeUnspecified, false
}

// ClaimStatus is where a claim is in its life. Values match dict.v1.ClaimStatus.
type ClaimStatus int

const (
	ClaimStatusUnspecified ClaimStatus = iota
	ClaimStatusOpen
	ClaimStatusWaitingResolution
	ClaimStatusConfirmed
	ClaimStatusCancelled
	ClaimStatusCompleted
)

func (s ClaimStatus) String() string {
	switch s {
	case ClaimStatusOpen:
		return "OPEN"
	case ClaimStatusWaitingResolution:
		return "WAITING_RESOLUTION"
	case ClaimStatusConfirmed:
		return "CONFIRMED"
	case ClaimStatusCancelled:
		return "CANCELLED"
	case ClaimStatusCompleted:
		return "COMPLETED"
	default:
		return "UNSPECIFIED"
	}
}

// ParseClaimStatus is the inverse of [ClaimStatus.String].
func ParseClaimStatus(s string) (ClaimStatus, bool) {
	for _, st := range []ClaimStatus{ClaimStatusOpen, ClaimStatusWaitingResolution, ClaimStatusConfirmed, ClaimStatusCancelled, ClaimStatusCompleted} {
		if st.String() == s {
			return st, true
		}
	}
	return ClaimStatusUnspecified, false
}

// Open reports whether the claim still locks its key: OPEN,
// WAITING_RESOLUTION or CONFIRMED.
func (s ClaimStatus) Open() bool {
	return s == ClaimStatusOpen || s == ClaimStatusWaitingResolution || s == ClaimStatusConfirmed
}

// ClaimAction is what one side does to a claim. Values match dict.v1.ClaimAction.
type ClaimAction int

const (
	ClaimActionUnspecified ClaimAction = iota
	// ClaimActionAcknowledge: the donor has seen the claim.
	ClaimActionAcknowledge
	// ClaimActionConfirm: the donor gives the key up.
	ClaimActionConfirm
	// ClaimActionCancel: either side ends the claim.
	ClaimActionCancel
	// ClaimActionComplete: the claimer takes the key.
	ClaimActionComplete
)

func (a ClaimAction) String() string {
	switch a {
	case ClaimActionAcknowledge:
		return "ACKNOWLEDGE"
	case ClaimActionConfirm:
		return "CONFIRM"
	case ClaimActionCancel:
		return "CANCEL"
	case ClaimActionComplete:
		return "COMPLETE"
	default:
		return "UNSPECIFIED"
	}
}

// ClaimSide is the part a participant plays in a claim.
type ClaimSide int

const (
	// ClaimSideNone is a participant that is neither claimer nor donor.
	ClaimSideNone ClaimSide = iota
	// ClaimSideClaimer is the participant that opened the claim (the new PSP).
	ClaimSideClaimer
	// ClaimSideDonor is the participant that held the key when the claim opened.
	ClaimSideDonor
)

func (s ClaimSide) String() string {
	switch s {
	case ClaimSideClaimer:
		return "claimer"
	case ClaimSideDonor:
		return "donor"
	default:
		return "none"
	}
}

// The claim periods (DOMAIN.md, "Claims"), counted from the claim's creation.
const (
	// ClaimResolutionPeriod: the donor has 7 days to answer. After it, an
	// unanswered ownership claim is confirmed by the donor with
	// DEFAULT_OPERATION and an unanswered portability claim cancelled by the
	// donor with DEFAULT_OPERATION.
	ClaimResolutionPeriod = 7 * 24 * time.Hour
	// ClaimCompletionPeriod: an ownership claim may be completed only after
	// day 14.
	ClaimCompletionPeriod = 14 * 24 * time.Hour
	// ClaimOwnershipValidationPeriod: the claimer cancels an ownership
	// claim with DEFAULT_OPERATION only after day 30 (its user did not
	// validate possession of the key).
	ClaimOwnershipValidationPeriod = 30 * 24 * time.Hour
)

// ReasonClaimNotFound is the reason for a claim id that names no claim. It
// is not in the DICT's vocabulary of DOMAIN.md (which has no not-found
// reason for claims); [ReasonEntryNotFound] is its counterpart for keys.
const ReasonClaimNotFound = "ClaimNotFound"

// ClaimPeriods returns the deadlines of a claim of type t created at
// created: the resolution period ends 7 days after creation; the completion
// period ends 14 days after creation for an ownership claim. A portability
// claim may be completed as soon as it is CONFIRMED, so its completion
// period end is set equal to its resolution period end and never enforced.
func ClaimPeriods(t ClaimType, created time.Time) (resolutionEnd, completionEnd time.Time) {
	resolutionEnd = created.Add(ClaimResolutionPeriod)
	if t == ClaimTypeOwnership {
		return resolutionEnd, created.Add(ClaimCompletionPeriod)
	}
	return resolutionEnd, resolutionEnd
}

// CheckClaimType applies BCB's rule on which claim fits a key: PORTABILITY
// for a CPF, CNPJ, PHONE or EMAIL key whose current owner has the claimer's
// tax id (sameOwner), OWNERSHIP for a PHONE or EMAIL key whose current owner
// is someone else. Anything else (an EVP key, ownership of a CPF, a
// portability for another owner, an unknown type) is refused with
// [ReasonClaimTypeInconsistent].
func CheckClaimType(t ClaimType, k KeyType, sameOwner bool) error {
	switch t {
	case ClaimTypePortability:
		switch k {
		case KeyTypeCPF, KeyTypeCNPJ, KeyTypePhone, KeyTypeEmail:
		default:
			return E(KindPrecondition, ReasonClaimTypeInconsistent, "a PORTABILITY claim is only for CPF, CNPJ, PHONE or EMAIL keys; %s keys cannot be claimed", k)
		}
		if !sameOwner {
			return E(KindPrecondition, ReasonClaimTypeInconsistent, "the key belongs to another owner: open an OWNERSHIP claim, not a PORTABILITY one")
		}
		return nil
	case ClaimTypeOwnership:
		switch k {
		case KeyTypePhone, KeyTypeEmail:
		default:
			return E(KindPrecondition, ReasonClaimTypeInconsistent, "an OWNERSHIP claim is only for PHONE or EMAIL keys, not %s", k)
		}
		if sameOwner {
			return E(KindPrecondition, ReasonClaimTypeInconsistent, "the key already belongs to the same owner at another participant: open a PORTABILITY claim, not an OWNERSHIP one")
		}
		return nil
	default:
		return Invalid("type", "claim type must be PORTABILITY or OWNERSHIP")
	}
}

// ClaimState is what [ClaimTransition] needs to know of a claim.
type ClaimState struct {
	Type                ClaimType
	Status              ClaimStatus
	CreatedAt           time.Time
	ResolutionPeriodEnd time.Time
	CompletionPeriodEnd time.Time
}

// ClaimEffect is what a transition does to the directory's entry for the
// claimed key, besides changing the claim's status.
type ClaimEffect int

const (
	// ClaimEffectNone leaves the entry as it is.
	ClaimEffectNone ClaimEffect = iota
	// ClaimEffectRemoveDonorEntry: the donor confirmed, the key leaves the
	// donor (CID event REMOVED at the donor).
	ClaimEffectRemoveDonorEntry
	// ClaimEffectRestoreDonorEntry: a CONFIRMED claim was cancelled, the key
	// goes back to the donor as it was.
	ClaimEffectRestoreDonorEntry
	// ClaimEffectCreateClaimerEntry: the claimer completed, the key is the
	// claimer's, with the claimer's account and owner (CID event ADDED at
	// the claimer).
	ClaimEffectCreateClaimerEntry
)

func (e ClaimEffect) String() string {
	switch e {
	case ClaimEffectRemoveDonorEntry:
		return "remove donor entry"
	case ClaimEffectRestoreDonorEntry:
		return "restore donor entry"
	case ClaimEffectCreateClaimerEntry:
		return "create claimer entry"
	default:
		return "none"
	}
}

// ClaimOutcome is the result of an allowed transition.
type ClaimOutcome struct {
	Status ClaimStatus
	Effect ClaimEffect
}

// ClaimTransition decides whether side may apply action with reason to a
// claim in state c at time now, and what follows. It is pure: callers load
// the claim, call it, and store the outcome. The rules (DOMAIN.md, "Claims";
// DICT API v2.6.1):
//
//   - ACKNOWLEDGE: donor only; OPEN → WAITING_RESOLUTION. The reason is ignored.
//   - CONFIRM: donor only; OPEN or WAITING_RESOLUTION → CONFIRMED, removing the
//     donor's entry. Reasons USER_REQUESTED, ACCOUNT_CLOSURE, or
//     DEFAULT_OPERATION for an OWNERSHIP claim once the resolution period has
//     ended ([ReasonClaimResolutionPeriodNotEnded] before).
//   - CANCEL: from OPEN, WAITING_RESOLUTION or CONFIRMED → CANCELLED; from
//     CONFIRMED the donor's entry is restored.
//     The claimer may cancel with USER_REQUESTED, ACCOUNT_CLOSURE, FRAUD,
//     RECONCILIATION or RFB_VALIDATION at any time, and with DEFAULT_OPERATION
//     only an OWNERSHIP claim after day 30 (its user never validated
//     possession). The donor may cancel with FRAUD, ACCOUNT_CLOSURE,
//     RECONCILIATION or RFB_VALIDATION, with USER_REQUESTED only a PORTABILITY
//     claim (its user refused to let the key go), and with DEFAULT_OPERATION
//     only a PORTABILITY claim once the resolution period has ended
//     ([ReasonClaimResolutionPeriodNotEnded] before).
//   - COMPLETE: claimer only; CONFIRMED → COMPLETED, creating the claimer's
//     entry; an OWNERSHIP claim only once the completion period has ended
//     ([ReasonClaimCompletionPeriodNotEnded] before). The reason is ignored.
//
// Refusals are *[Error]s with reason [ReasonClaimOperationInvalid]: of kind
// [KindPermissionDenied] when the action or the reason is not the side's to
// use (a participant that is neither side included), [KindPrecondition] when
// the claim's status does not allow the action, [KindInvalid] for an unknown
// action or a reason the action never takes. Period refusals are of kind
// [KindPrecondition]. The side is checked first, then the status, then the
// reason, then the clock.
func ClaimTransition(c ClaimState, side ClaimSide, action ClaimAction, reason Reason, now time.Time) (ClaimOutcome, error) {
	if side != ClaimSideClaimer && side != ClaimSideDonor {
		return ClaimOutcome{}, E(KindPermissionDenied, ReasonClaimOperationInvalid, "only the claimer or the donor may act on a claim")
	}
	wrongSide := func(who string) error {
		return E(KindPermissionDenied, ReasonClaimOperationInvalid, "only the %s may %s a claim; the caller is the %s", who, action, side)
	}
	badStatus := func(from string) error {
		return E(KindPrecondition, ReasonClaimOperationInvalid, "%s needs a claim that is %s; this one is %s", action, from, c.Status)
	}
	switch action {
	case ClaimActionAcknowledge:
		if side != ClaimSideDonor {
			return ClaimOutcome{}, wrongSide("donor")
		}
		if c.Status != ClaimStatusOpen {
			return ClaimOutcome{}, badStatus("OPEN")
		}
		return ClaimOutcome{Status: ClaimStatusWaitingResolution}, nil

	case ClaimActionConfirm:
		if side != ClaimSideDonor {
			return ClaimOutcome{}, wrongSide("donor")
		}
		if c.Status != ClaimStatusOpen && c.Status != ClaimStatusWaitingResolution {
			return ClaimOutcome{}, badStatus("OPEN or WAITING_RESOLUTION")
		}
		switch reason {
		case ReasonUserRequested, ReasonAccountClosure:
		case ReasonDefaultOperation:
			if c.Type != ClaimTypeOwnership {
				return ClaimOutcome{}, E(KindPermissionDenied, ReasonClaimOperationInvalid, "DEFAULT_OPERATION confirms only OWNERSHIP claims; an unanswered PORTABILITY claim is cancelled by the donor")
			}
			if now.Before(c.ResolutionPeriodEnd) {
				return ClaimOutcome{}, E(KindPrecondition, ReasonClaimResolutionPeriodNotEnded, "the donor may confirm with DEFAULT_OPERATION only after the resolution period ends at %s", c.ResolutionPeriodEnd.UTC().Format(time.RFC3339))
			}
		default:
			return ClaimOutcome{}, E(KindInvalid, ReasonClaimOperationInvalid, "confirm reason must be USER_REQUESTED, ACCOUNT_CLOSURE or DEFAULT_OPERATION; got %s", reason)
		}
		return ClaimOutcome{Status: ClaimStatusConfirmed, Effect: ClaimEffectRemoveDonorEntry}, nil

	case ClaimActionCancel:
		if !c.Status.Open() {
			return ClaimOutcome{}, badStatus("OPEN, WAITING_RESOLUTION or CONFIRMED")
		}
		if err := cancelAllowed(c, side, reason, now); err != nil {
			return ClaimOutcome{}, err
		}
		out := ClaimOutcome{Status: ClaimStatusCancelled}
		if c.Status == ClaimStatusConfirmed {
			out.Effect = ClaimEffectRestoreDonorEntry
		}
		return out, nil

	case ClaimActionComplete:
		if side != ClaimSideClaimer {
			return ClaimOutcome{}, wrongSide("claimer")
		}
		if c.Status != ClaimStatusConfirmed {
			return ClaimOutcome{}, badStatus("CONFIRMED")
		}
		if c.Type == ClaimTypeOwnership && now.Before(c.CompletionPeriodEnd) {
			return ClaimOutcome{}, E(KindPrecondition, ReasonClaimCompletionPeriodNotEnded, "an OWNERSHIP claim may be completed only after the completion period ends at %s", c.CompletionPeriodEnd.UTC().Format(time.RFC3339))
		}
		return ClaimOutcome{Status: ClaimStatusCompleted, Effect: ClaimEffectCreateClaimerEntry}, nil

	default:
		return ClaimOutcome{}, E(KindInvalid, ReasonClaimOperationInvalid, "claim action must be ACKNOWLEDGE, CONFIRM, CANCEL or COMPLETE")
	}
}

// cancelAllowed applies the table of who may cancel with which reason.
func cancelAllowed(c ClaimState, side ClaimSide, reason Reason, now time.Time) error {
	notYours := func(why string) error {
		return E(KindPermissionDenied, ReasonClaimOperationInvalid, "the %s may not cancel with %s: %s", side, reason, why)
	}
	switch reason {
	case ReasonAccountClosure, ReasonFraud, ReasonReconciliation, ReasonRFBValidation:
		return nil
	case ReasonUserRequested:
		if side == ClaimSideDonor && c.Type != ClaimTypePortability {
			return notYours("the donor cancels at its user's request only a PORTABILITY claim")
		}
		return nil
	case ReasonDefaultOperation:
		if side == ClaimSideClaimer {
			if c.Type != ClaimTypeOwnership {
				return notYours("the claimer cancels with DEFAULT_OPERATION only an OWNERSHIP claim")
			}
			if end := c.CreatedAt.Add(ClaimOwnershipValidationPeriod); now.Before(end) {
				return E(KindPrecondition, ReasonClaimOperationInvalid, "the claimer may cancel an OWNERSHIP claim with DEFAULT_OPERATION only after day 30, at %s", end.UTC().Format(time.RFC3339))
			}
			return nil
		}
		if c.Type != ClaimTypePortability {
			return notYours("the donor cancels with DEFAULT_OPERATION only a PORTABILITY claim left unanswered; an unanswered OWNERSHIP claim is confirmed")
		}
		if now.Before(c.ResolutionPeriodEnd) {
			return E(KindPrecondition, ReasonClaimResolutionPeriodNotEnded, "the donor may cancel with DEFAULT_OPERATION only after the resolution period ends at %s", c.ResolutionPeriodEnd.UTC().Format(time.RFC3339))
		}
		return nil
	default:
		return E(KindInvalid, ReasonClaimOperationInvalid, "cancel reason must be USER_REQUESTED, ACCOUNT_CLOSURE, DEFAULT_OPERATION, FRAUD, RECONCILIATION or RFB_VALIDATION; got %s", reason)
	}
}
