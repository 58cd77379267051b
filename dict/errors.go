package dict

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an [Error] so that transports can map it to a wire code in
// one table. The list is append-only.
type Kind int

const (
	KindInternal Kind = iota
	KindInvalid
	KindNotFound
	KindConflict
	KindPrecondition
	KindRateLimited
	KindUnavailable
	KindPermissionDenied
	KindUnimplemented
)

func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not found"
	case KindConflict:
		return "conflict"
	case KindPrecondition:
		return "precondition"
	case KindRateLimited:
		return "rate limited"
	case KindUnavailable:
		return "unavailable"
	case KindPermissionDenied:
		return "permission denied"
	case KindUnimplemented:
		return "unimplemented"
	default:
		return "internal"
	}
}

// The DICT's reason names (DOMAIN.md, "Error vocabulary"). They travel to
// clients in a google.rpc.ErrorInfo detail.
const (
	ReasonEntryInvalid                            = "EntryInvalid"
	ReasonEntryLimitExceeded                      = "EntryLimitExceeded"
	ReasonEntryAlreadyExists                      = "EntryAlreadyExists"
	ReasonEntryKeyOwnedByDifferentPerson          = "EntryKeyOwnedByDifferentPerson"
	ReasonEntryKeyInCustodyOfDifferentParticipant = "EntryKeyInCustodyOfDifferentParticipant"
	ReasonEntryLockedByClaim                      = "EntryLockedByClaim"
	ReasonEntryTaxIDNumberByDifferentOwner        = "EntryTaxIdNumberByDifferentOwner"
	ReasonEntryBlocked                            = "EntryBlocked"
	ReasonEntryCannotBeQueriedForBookTransfer     = "EntryCannotBeQueriedForBookTransfer"
	ReasonEntryNotFound                           = "EntryNotFound"
	ReasonRequestIDAlreadyUsed                    = "RequestIdAlreadyUsed"
	ReasonClaimInvalid                            = "ClaimInvalid"
	ReasonClaimTypeInconsistent                   = "ClaimTypeInconsistent"
	ReasonClaimKeyNotFound                        = "ClaimKeyNotFound"
	ReasonClaimAlreadyExistsForKey                = "ClaimAlreadyExistsForKey"
	ReasonClaimOperationInvalid                   = "ClaimOperationInvalid"
	ReasonClaimResolutionPeriodNotEnded           = "ClaimResolutionPeriodNotEnded"
	ReasonClaimCompletionPeriodNotEnded           = "ClaimCompletionPeriodNotEnded"
	ReasonRateLimited                             = "RateLimited"
	ReasonForbidden                               = "Forbidden"
	ReasonInternal                                = "InternalError"
	ReasonUnavailable                             = "ServiceUnavailable"
	ReasonNotImplemented                          = "NotImplemented"
)

// Error is the one error type of the domain. Field names the offending input
// field (proto name, dotted for nested fields, e.g. "owner.tax_id") when the
// error is about input; Msg is a sentence a person can act on and never holds
// internal detail (SQL, hosts, stacks), which lives in Err.
type Error struct {
	Kind   Kind
	Reason string
	Field  string
	Msg    string
	Err    error
	// RetryAfter tells a rate-limited caller when to try again.
	RetryAfter time.Duration
	// Violations lists further bad fields when one request has several.
	// When set, it lists every bad field, the one in Field and Msg included,
	// so a transport can name each in a google.rpc.BadRequest.
	Violations []FieldViolation
}

// FieldViolation names one bad input field and the rule it broke.
type FieldViolation struct {
	Field string
	Rule  string
}

func (e *Error) Error() string {
	var s string
	if e.Field != "" {
		s = e.Field + ": " + e.Msg
	} else {
		s = e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Invalid builds a [KindInvalid] error with reason EntryInvalid for one field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Reason: ReasonEntryInvalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// E builds an [Error] of the given kind and reason.
func E(kind Kind, reason, format string, args ...any) *Error {
	return &Error{Kind: kind, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Internal wraps an unexpected failure; its cause is kept for logs but never
// shown to clients.
func Internal(op string, err error) *Error {
	return &Error{Kind: KindInternal, Reason: ReasonInternal, Msg: op + " failed", Err: err}
}

// KindOf reports the [Kind] of err, or [KindInternal] when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ReasonOf reports the DICT reason of err, or "" when err is not an *Error.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
