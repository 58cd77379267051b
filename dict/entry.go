// Package dict holds the PIX directory's business: keys, accounts, owners,
// their validation and normalisation, the keys-per-account limits, CID and
// VSync, claims and the use cases ([Service]). It decides; it does not serve
// (that is rpc's job) and it never talks to Pulsar or Redis directly: it
// declares the small interfaces it needs and main hands it implementations.
package dict

import (
	"time"

	"github.com/google/uuid"
)

// KeyType is the type of a PIX key. Values match dict.v1.KeyType.
type KeyType int

const (
	KeyTypeUnspecified KeyType = iota
	KeyTypeCPF
	KeyTypeCNPJ
	KeyTypePhone
	KeyTypeEmail
	KeyTypeEVP
)

// KeyTypes lists every valid key type, in wire order.
var KeyTypes = []KeyType{KeyTypeCPF, KeyTypeCNPJ, KeyTypePhone, KeyTypeEmail, KeyTypeEVP}

func (t KeyType) String() string {
	switch t {
	case KeyTypeCPF:
		return "CPF"
	case KeyTypeCNPJ:
		return "CNPJ"
	case KeyTypePhone:
		return "PHONE"
	case KeyTypeEmail:
		return "EMAIL"
	case KeyTypeEVP:
		return "EVP"
	default:
		return "UNSPECIFIED"
	}
}

// ParseKeyType is the inverse of [KeyType.String].
func ParseKeyType(s string) (KeyType, bool) {
	for _, t := range KeyTypes {
		if t.String() == s {
			return t, true
		}
	}
	return KeyTypeUnspecified, false
}

// AccountType is the type of a transactional account. Values match dict.v1.AccountType.
type AccountType int

const (
	AccountTypeUnspecified AccountType = iota
	AccountTypeCACC
	AccountTypeSVGS
	AccountTypeSLRY
	AccountTypeTRAN
)

func (t AccountType) String() string {
	switch t {
	case AccountTypeCACC:
		return "CACC"
	case AccountTypeSVGS:
		return "SVGS"
	case AccountTypeSLRY:
		return "SLRY"
	case AccountTypeTRAN:
		return "TRAN"
	default:
		return "UNSPECIFIED"
	}
}

// ParseAccountType is the inverse of [AccountType.String].
func ParseAccountType(s string) (AccountType, bool) {
	for _, t := range []AccountType{AccountTypeCACC, AccountTypeSVGS, AccountTypeSLRY, AccountTypeTRAN} {
		if t.String() == s {
			return t, true
		}
	}
	return AccountTypeUnspecified, false
}

// OwnerType tells a natural person from a legal person. Values match dict.v1.OwnerType.
type OwnerType int

const (
	OwnerTypeUnspecified OwnerType = iota
	OwnerTypeNaturalPerson
	OwnerTypeLegalPerson
)

func (t OwnerType) String() string {
	switch t {
	case OwnerTypeNaturalPerson:
		return "NATURAL_PERSON"
	case OwnerTypeLegalPerson:
		return "LEGAL_PERSON"
	default:
		return "UNSPECIFIED"
	}
}

// ParseOwnerType is the inverse of [OwnerType.String].
func ParseOwnerType(s string) (OwnerType, bool) {
	switch s {
	case "NATURAL_PERSON":
		return OwnerTypeNaturalPerson, true
	case "LEGAL_PERSON":
		return OwnerTypeLegalPerson, true
	}
	return OwnerTypeUnspecified, false
}

// EntryStatus is the life-cycle state of an entry. Values match dict.v1.EntryStatus.
type EntryStatus int

const (
	EntryStatusUnspecified EntryStatus = iota
	EntryStatusPending
	EntryStatusActive
	EntryStatusLockedByClaim
	EntryStatusDeleted
	EntryStatusFailed
)

func (s EntryStatus) String() string {
	switch s {
	case EntryStatusPending:
		return "PENDING"
	case EntryStatusActive:
		return "ACTIVE"
	case EntryStatusLockedByClaim:
		return "LOCKED_BY_CLAIM"
	case EntryStatusDeleted:
		return "DELETED"
	case EntryStatusFailed:
		return "FAILED"
	default:
		return "UNSPECIFIED"
	}
}

// ParseEntryStatus is the inverse of [EntryStatus.String].
func ParseEntryStatus(s string) (EntryStatus, bool) {
	for _, st := range []EntryStatus{EntryStatusPending, EntryStatusActive, EntryStatusLockedByClaim, EntryStatusDeleted, EntryStatusFailed} {
		if st.String() == s {
			return st, true
		}
	}
	return EntryStatusUnspecified, false
}

// Reason is why a write or a claim step happened. Values match dict.v1.Reason.
type Reason int

const (
	ReasonUnspecified Reason = iota
	ReasonUserRequested
	ReasonAccountClosure
	ReasonBranchTransfer
	ReasonReconciliation
	ReasonFraud
	ReasonRFBValidation
	ReasonDefaultOperation
)

func (r Reason) String() string {
	switch r {
	case ReasonUserRequested:
		return "USER_REQUESTED"
	case ReasonAccountClosure:
		return "ACCOUNT_CLOSURE"
	case ReasonBranchTransfer:
		return "BRANCH_TRANSFER"
	case ReasonReconciliation:
		return "RECONCILIATION"
	case ReasonFraud:
		return "FRAUD"
	case ReasonRFBValidation:
		return "RFB_VALIDATION"
	case ReasonDefaultOperation:
		return "DEFAULT_OPERATION"
	default:
		return "UNSPECIFIED"
	}
}

// Account is a transactional account at a participant.
type Account struct {
	Participant string // ISPB, 8 digits
	Branch      string // 1-4 digits, optional
	Number      string // 1-20 digits
	Type        AccountType
	OpenedAt    time.Time
}

// Owner is the person who owns the account and the key.
type Owner struct {
	Type      OwnerType
	TaxID     string // CPF (11 digits) or CNPJ (14 characters)
	Name      string
	TradeName string
}

// Entry links a key to an account and its owner.
type Entry struct {
	KeyType       KeyType
	Key           string
	Account       Account
	Owner         Owner
	Status        EntryStatus
	CreatedAt     time.Time
	KeyOwnedSince time.Time
	UpdatedAt     time.Time
	CID           string
	RequestID     uuid.UUID
	// PendingOp is the write waiting for the directory while Status is
	// [EntryStatusPending]: [PendingCreate], [PendingUpdate] or
	// [PendingDelete]; "" otherwise.
	PendingOp string `json:",omitempty"`
	// FailureReason and FailureMessage are the directory's refusal of the
	// entry's last write (a FAILED create, or an update or delete refused).
	FailureReason  string `json:",omitempty"`
	FailureMessage string `json:",omitempty"`
}

// The writes an entry may be waiting for the directory to confirm.
const (
	PendingCreate = "CREATE"
	PendingUpdate = "UPDATE"
	PendingDelete = "DELETE"
)

// inDirectory reports whether the directory holds e for its participant:
// confirmed, or with an update or delete still pending (the entry stands as
// it is until the directory confirms).
func (e Entry) inDirectory() bool {
	return e.Status != EntryStatusFailed && e.PendingOp != PendingCreate
}
