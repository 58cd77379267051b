package dict

import "github.com/google/uuid"

// NormalizeNewEntry checks and normalises a request to register a key by
// the rules [Service.CreateKey] applies (key by type, account, owner, a
// CPF/CNPJ key equal to its owner's tax id), reporting every bad field at
// once. The RequestId is not checked (see [ParseRequestID]); for EVP the key
// must be empty and stays empty: the directory generates it ([NewEVP]).
// It is for the simulated directory (dictsim), which applies BCB's rules to
// every participant's requests.
func NormalizeNewEntry(in CreateKeyInput) (Entry, error) { return validateCreate(in) }

// CheckKeyOwner applies BCB's rule that a CPF key is its natural-person
// owner's CPF and a CNPJ key its legal-person owner's CNPJ
// ([ReasonEntryTaxIDNumberByDifferentOwner] when the tax id differs).
func CheckKeyOwner(e Entry) error { return checkKeyOwner(e) }

// ParseRequestID parses a RequestId: a non-nil UUID of 36 characters, else
// an [KindInvalid] error on field "request_id".
func ParseRequestID(s string) (uuid.UUID, error) { return parseRequestID(s) }
