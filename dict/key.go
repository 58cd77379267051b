package dict

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// maxRawLen bounds what the normalisers read. The longest canonical key, an
// email, has 77 characters and formatting adds only a few, so anything longer
// is refused before any work is done on it.
const maxRawLen = 256

// maxEmailLen is BCB's limit on an email key.
const maxEmailLen = 77

// emailPattern is BCB's pattern for an email key, verbatim, so it can be
// compared with the DICT API specification by eye.
var emailPattern = regexp.MustCompile("^[a-z0-9.!#$&'*+\\/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")

// NormalizeKey returns the canonical form of a key of type t (DOMAIN.md,
// "Keys"), accepting the formatting people type:
//
//   - CPF: 11 digits with valid check digits; '.', '-' and spaces are removed.
//   - CNPJ: 12 digits or letters A-Z then 2 check digits; '.', '/', '-' and
//     spaces are removed and letters upper-cased (alphanumeric CNPJs are valid).
//   - PHONE: E.164, "+" then 2 to 15 digits, the first not 0; spaces, '(',
//     ')', '-' and '.' are removed. Any country, not only +55.
//   - EMAIL: surrounding spaces trimmed, lower-cased, at most 77 characters,
//     no '%', matching BCB's pattern.
//   - EVP: a UUID in the 8-4-4-4-12 form, lower-cased. EVP keys are created
//     only by the directory ([NewEVP]); this accepts one a caller names in a
//     lookup or a delete.
//
// Any other input is refused with a *[Error] of kind [KindInvalid], reason
// [ReasonEntryInvalid] and field "key" (or "key_type" for an unspecified
// type), whose message names the rule; messages never repeat the input beyond
// a single offending character.
func NormalizeKey(t KeyType, raw string) (string, error) {
	const field = "key"
	switch t {
	case KeyTypeCPF:
		return normalizeCPF(field, raw)
	case KeyTypeCNPJ:
		return normalizeCNPJ(field, raw)
	case KeyTypePhone:
		return normalizePhone(field, raw)
	case KeyTypeEmail:
		return normalizeEmail(field, raw)
	case KeyTypeEVP:
		return normalizeEVP(field, raw)
	default:
		return "", Invalid("key_type", "key type must be one of CPF, CNPJ, PHONE, EMAIL or EVP")
	}
}

// NormalizeTaxID returns the canonical tax id of an owner of type t: a CPF
// for a natural person, a CNPJ for a legal person, by the rules of
// [NormalizeKey]. Errors name the field "owner.tax_id", or "owner.type" when t
// is unspecified.
func NormalizeTaxID(t OwnerType, raw string) (string, error) {
	const field = "owner.tax_id"
	switch t {
	case OwnerTypeNaturalPerson:
		return normalizeCPF(field, raw)
	case OwnerTypeLegalPerson:
		return normalizeCNPJ(field, raw)
	default:
		return "", Invalid("owner.type", "owner type must be NATURAL_PERSON or LEGAL_PERSON")
	}
}

// NewEVP returns a new random (version 4) EVP key in canonical lower-case
// form. EVP keys are generated on the server, never taken from a caller.
func NewEVP() string {
	return uuid.New().String()
}

// ValidCPF reports whether s is a CPF in canonical form: 11 digits, not all
// equal, with valid mod-11 check digits.
func ValidCPF(s string) bool {
	if len(s) != 11 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return !allSame(s) && cpfCheckDigitsOK(s)
}

// ValidCNPJ reports whether s is a CNPJ in canonical form: 12 digits or
// upper-case letters, then 2 check digits, not all equal, with valid mod-11
// check digits (each character valued by its ASCII code minus 48).
func ValidCNPJ(s string) bool {
	if len(s) != 14 {
		return false
	}
	for i := 0; i < 12; i++ {
		if !isDigit(s[i]) && !isUpper(s[i]) {
			return false
		}
	}
	if !isDigit(s[12]) || !isDigit(s[13]) {
		return false
	}
	return !allSame(s) && cnpjCheckDigitsOK(s)
}

func normalizeCPF(field, raw string) (string, error) {
	if raw == "" {
		return "", Invalid(field, "CPF is required")
	}
	if len(raw) > maxRawLen {
		return "", tooLong(field, "CPF", raw)
	}
	var d [11]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case isDigit(c):
			if n < len(d) {
				d[n] = c
			}
			n++
		case c == '.' || c == '-' || c == ' ':
		default:
			return "", Invalid(field, "CPF may contain only digits, optionally formatted with '.', '-' and spaces; found %s", offending(raw, i))
		}
	}
	if n != len(d) {
		return "", Invalid(field, "CPF must have 11 digits with valid check digits; got %d digits", n)
	}
	s := string(d[:])
	if allSame(s) {
		return "", Invalid(field, "CPF must not have all 11 digits equal")
	}
	if !cpfCheckDigitsOK(s) {
		return "", Invalid(field, "CPF check digits (the last 2) do not match the first 9 digits; check the number for typos")
	}
	return s, nil
}

func normalizeCNPJ(field, raw string) (string, error) {
	if raw == "" {
		return "", Invalid(field, "CNPJ is required")
	}
	if len(raw) > maxRawLen {
		return "", tooLong(field, "CNPJ", raw)
	}
	var d [14]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case isDigit(c) || isUpper(c) || isLower(c):
			if n < len(d) {
				d[n] = toUpper(c)
			}
			n++
		case c == '.' || c == '/' || c == '-' || c == ' ':
		default:
			return "", Invalid(field, "CNPJ may contain only digits and letters A-Z, optionally formatted with '.', '/', '-' and spaces; found %s", offending(raw, i))
		}
	}
	if n != len(d) {
		return "", Invalid(field, "CNPJ must have 14 characters (12 digits or letters A-Z, then 2 check digits); got %d", n)
	}
	if !isDigit(d[12]) || !isDigit(d[13]) {
		return "", Invalid(field, "CNPJ must end with 2 check digits (0-9); letters are allowed only in the first 12 characters")
	}
	s := string(d[:])
	if allSame(s) {
		return "", Invalid(field, "CNPJ must not have all 14 characters equal")
	}
	if !cnpjCheckDigitsOK(s) {
		return "", Invalid(field, "CNPJ check digits (the last 2) do not match the first 12 characters; check the number for typos")
	}
	return s, nil
}

func normalizePhone(field, raw string) (string, error) {
	if raw == "" {
		return "", Invalid(field, "phone is required")
	}
	if len(raw) > maxRawLen {
		return "", tooLong(field, "phone", raw)
	}
	// "+" and at most 15 digits; n keeps counting past the end so the
	// message can say how many digits there were.
	var d [16]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '+':
			if n != 0 {
				return "", Invalid(field, "phone may have '+' only at the start, before the country code")
			}
			d[0] = c
			n++
		case isDigit(c):
			if n < len(d) {
				d[n] = c
			}
			n++
		case c == ' ' || c == '(' || c == ')' || c == '-' || c == '.':
		default:
			return "", Invalid(field, "phone may contain only '+', digits and the separators ' ', '(', ')', '-', '.'; found %s", offending(raw, i))
		}
	}
	if n == 0 {
		return "", Invalid(field, "phone is required")
	}
	if d[0] != '+' {
		return "", Invalid(field, "phone must be in E.164 format, starting with '+' and the country code, e.g. +5561988880000; the leading '+' is missing")
	}
	digits := n - 1
	if digits > 0 && d[1] == '0' {
		return "", Invalid(field, "phone country code must not start with 0 (E.164), e.g. +5561988880000")
	}
	if digits < 2 || digits > 15 {
		return "", Invalid(field, "phone must have 2 to 15 digits after '+' (E.164); got %d digits", digits)
	}
	return string(d[:n]), nil
}

func normalizeEmail(field, raw string) (string, error) {
	if len(raw) > maxRawLen {
		return "", tooLong(field, "email", raw)
	}
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", Invalid(field, "email is required")
	}
	// Only ASCII is lower-cased: Unicode case folding maps lookalikes such as
	// the Kelvin sign to ASCII letters, and BCB's pattern is ASCII anyway.
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return "", Invalid(field, "email may contain only ASCII letters, digits and symbols; found %s", offending(s, i))
		}
	}
	s = strings.ToLower(s)
	if strings.IndexByte(s, '%') >= 0 {
		return "", Invalid(field, "email must not contain '%%'")
	}
	if len(s) > maxEmailLen {
		return "", Invalid(field, "email must have at most %d characters; got %d", maxEmailLen, len(s))
	}
	if !emailPattern.MatchString(s) {
		if strings.Count(s, "@") != 1 {
			return "", Invalid(field, "email must have exactly one '@', as in name@example.com")
		}
		return "", Invalid(field, "email does not match BCB's pattern: before '@' only letters, digits and .!#$&'*+/=?^_`{|}~- are allowed; after it, dot-separated labels of letters, digits and '-', not starting or ending with '-'")
	}
	return s, nil
}

func normalizeEVP(field, raw string) (string, error) {
	const form = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
	if raw == "" {
		return "", Invalid(field, "EVP is required")
	}
	if len(raw) > maxRawLen {
		return "", tooLong(field, "EVP", raw)
	}
	if len(raw) != len(form) {
		return "", Invalid(field, "EVP must be a UUID of 36 characters in the form %s (x a hex digit); got %d characters", form, utf8.RuneCountInString(raw))
	}
	var d [len(form)]byte
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if form[i] == '-' {
			if c != '-' {
				return "", Invalid(field, "EVP must be a UUID in the form %s; expected '-' at position %d", form, i+1)
			}
			d[i] = c
			continue
		}
		switch {
		case isDigit(c) || 'a' <= c && c <= 'f':
			d[i] = c
		case 'A' <= c && c <= 'F':
			d[i] = c + ('a' - 'A')
		default:
			return "", Invalid(field, "EVP must be a UUID in the form %s (x a hex digit 0-9 or a-f); found %s", form, offending(raw, i))
		}
	}
	return string(d[:]), nil
}

// cpfCheckDigitsOK checks the two mod-11 check digits of an 11-digit string.
func cpfCheckDigitsOK(s string) bool {
	sum := 0
	for i := 0; i < 9; i++ {
		sum += int(s[i]-'0') * (10 - i)
	}
	if mod11Digit(sum) != int(s[9]-'0') {
		return false
	}
	sum = 0
	for i := 0; i < 10; i++ {
		sum += int(s[i]-'0') * (11 - i)
	}
	return mod11Digit(sum) == int(s[10]-'0')
}

var (
	cnpjWeights1 = [12]int{5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}
	cnpjWeights2 = [13]int{6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}
)

// cnpjCheckDigitsOK checks the two mod-11 check digits of a 14-character
// string, each character valued by its ASCII code minus 48 (A=17 … Z=42), as
// the Receita Federal defines for alphanumeric CNPJs; for all-digit CNPJs this
// is the classic algorithm.
func cnpjCheckDigitsOK(s string) bool {
	sum := 0
	for i, w := range cnpjWeights1 {
		sum += int(s[i]-'0') * w
	}
	if mod11Digit(sum) != int(s[12]-'0') {
		return false
	}
	sum = 0
	for i, w := range cnpjWeights2 {
		sum += int(s[i]-'0') * w
	}
	return mod11Digit(sum) == int(s[13]-'0')
}

func mod11Digit(sum int) int {
	if r := sum % 11; r >= 2 {
		return 11 - r
	}
	return 0
}

func allSame(s string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] != s[0] {
			return false
		}
	}
	return true
}

func tooLong(field, what, raw string) *Error {
	return Invalid(field, "%s is too long: at most %d bytes are accepted, even formatted; got %d", what, maxRawLen, len(raw))
}

// offending describes the character at byte offset i of s for an error
// message: the one character and its position, never more of the input.
func offending(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return fmt.Sprintf("%q at position %d", r, utf8.RuneCountInString(s[:i])+1)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isLower(c byte) bool { return 'a' <= c && c <= 'z' }

func toUpper(c byte) byte {
	if isLower(c) {
		return c - ('a' - 'A')
	}
	return c
}
