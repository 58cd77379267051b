package dict

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on owner names (DOMAIN.md, "Keys").
const (
	maxNameLen      = 150
	maxTradeNameLen = 100
)

// Normalize checks an account against the DICT's rules (DOMAIN.md, "Keys")
// and returns it in canonical form: participant ISPB of exactly 8 digits,
// branch of 1 to 4 digits or empty, number of 1 to 20 digits, type CACC, SVGS,
// SLRY or TRAN, and an opening date. Nothing is stripped: the DICT takes digits
// only, and guessing which punctuation a client meant (a check-digit dash?)
// could silently point a key at the wrong account.
//
// All bad fields are reported at once: the returned *[Error] carries the first
// in Field and Msg, and every one (the first included) in Violations.
func (a Account) Normalize() (Account, error) {
	var v violations
	v.digits("account.participant", "participant ISPB", a.Participant, 8, 8, true)
	v.digits("account.branch", "branch", a.Branch, 1, 4, false)
	v.digits("account.number", "account number", a.Number, 1, 20, true)
	switch a.Type {
	case AccountTypeCACC, AccountTypeSVGS, AccountTypeSLRY, AccountTypeTRAN:
	default:
		v.add("account.type", "account type must be CACC, SVGS, SLRY or TRAN")
	}
	if a.OpenedAt.IsZero() {
		v.add("account.opened_at", "account opening date is required")
	}
	if err := v.err(); err != nil {
		return Account{}, err
	}
	return a, nil
}

// Normalize checks an owner against the DICT's rules (DOMAIN.md, "Keys") and
// returns it in canonical form: type NATURAL_PERSON with a CPF or LEGAL_PERSON
// with a CNPJ (see [NormalizeTaxID]); a name, trimmed, of at most 150
// characters; a trade name, trimmed, of at most 100 characters and only for a
// legal person. Names may not hold control characters (tabs, line breaks) or
// invalid UTF-8; inner spacing is kept as given, since the name must match
// the Receita Federal's records.
//
// All bad fields are reported at once, as by [Account.Normalize].
func (o Owner) Normalize() (Owner, error) {
	var v violations
	switch o.Type {
	case OwnerTypeNaturalPerson, OwnerTypeLegalPerson:
		taxID, err := NormalizeTaxID(o.Type, o.TaxID)
		if err != nil {
			v.addError(err)
		}
		o.TaxID = taxID
	default:
		// Without a type there is no rule to check the tax id against.
		v.add("owner.type", "owner type must be NATURAL_PERSON or LEGAL_PERSON")
	}
	o.Name = v.text("owner.name", "owner name", o.Name, maxNameLen, true)
	if o.Type == OwnerTypeNaturalPerson && strings.TrimSpace(o.TradeName) != "" {
		v.add("owner.trade_name", "trade name is only for legal persons; leave it empty for a natural person")
	} else {
		o.TradeName = v.text("owner.trade_name", "owner trade name", o.TradeName, maxTradeNameLen, false)
	}
	if err := v.err(); err != nil {
		return Owner{}, err
	}
	return o, nil
}

// MaskTaxIDForPayer returns what a payer may see of an owner's canonical tax
// id (DOMAIN.md, "Lookups for payments"): a CPF masked as ***.456.789-**, a
// CNPJ in full, in its raw canonical form (14 characters, unformatted).
// Anything else is not a canonical tax id and is hidden entirely as "***".
func MaskTaxIDForPayer(taxID string) string {
	switch {
	case len(taxID) == 11 && onlyDigits(taxID):
		return "***." + taxID[3:6] + "." + taxID[6:9] + "-**"
	case len(taxID) == 14 && onlyAlnumUpper(taxID):
		return taxID
	default:
		return "***"
	}
}

// maxLogMask bounds the asterisks MaskForLog writes, so that logging a huge
// rejected input does not produce a huge line.
const maxLogMask = 32

// MaskForLog masks a key or tax id for logs: at most the first 3 and last 2
// characters are kept, fewer for short values so that most of a value is
// always hidden ("12345678909" → "123******09"). An email keeps the first
// character of its local part and its domain ("fulano@example.com" →
// "f*****@example.com"). Characters that are not printable are masked too, so
// a value cannot forge log lines.
func MaskForLog(s string) string {
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		local, domain := s[:at], s[at+1:]
		return maskRunes(local, min(1, utf8.RuneCountInString(local)-1), 0) + "@" + maskRunes(domain, utf8.RuneCountInString(domain), 0)
	}
	n := utf8.RuneCountInString(s)
	return maskRunes(s, min(3, (n-1)/3), min(2, (n-1)/4))
}

// maskRunes keeps the first head and last tail runes of s (when printable)
// and replaces the others with '*'.
func maskRunes(s string, head, tail int) string {
	n := utf8.RuneCountInString(s)
	if head+tail > n {
		head, tail = n, 0
	}
	var b strings.Builder
	stars, i := 0, 0
	for _, r := range s {
		keep := i < head || i >= n-tail
		i++
		if keep && unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		if stars < maxLogMask {
			b.WriteByte('*')
		}
		stars++
	}
	return b.String()
}

// violations collects every bad field of one request, so that a client
// learns all its mistakes in one round trip.
type violations []FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, FieldViolation{Field: field, Rule: fmt.Sprintf(format, args...)})
}

func (v *violations) addError(err error) {
	if err == nil {
		return
	}
	var e *Error
	if errors.As(err, &e) {
		if len(e.Violations) > 0 {
			*v = append(*v, e.Violations...)
			return
		}
		*v = append(*v, FieldViolation{Field: e.Field, Rule: e.Msg})
		return
	}
	*v = append(*v, FieldViolation{Rule: err.Error()})
}

// err returns nil when no field is bad, and otherwise one *Error naming the
// first bad field and listing all of them.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	e := Invalid(v[0].Field, "%s", v[0].Rule)
	e.Violations = v
	return e
}

// digits checks that s holds between min and max ASCII digits; an empty s is
// accepted when the field is optional.
func (v *violations) digits(field, what, s string, minLen, maxLen int, required bool) {
	want := fmt.Sprintf("%d to %d digits", minLen, maxLen)
	if minLen == maxLen {
		want = fmt.Sprintf("exactly %d digits", minLen)
	}
	switch {
	case s == "" && !required:
	case s == "":
		v.add(field, "%s is required (%s)", what, want)
	case len(s) > maxLen:
		v.add(field, "%s must have %s; got %d characters", what, want, utf8.RuneCountInString(s))
	case !onlyDigits(s):
		i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		v.add(field, "%s must have digits only (%s), with no punctuation or spaces; found %s", what, want, offending(s, i))
	case len(s) < minLen:
		v.add(field, "%s must have %s; got %d", what, want, len(s))
	}
}

// text checks and trims a free-text name of at most maxLen characters,
// returning the trimmed text.
func (v *violations) text(field, what, s string, maxLen int, required bool) string {
	// A name of maxLen characters takes at most 4 bytes each; refuse anything
	// much longer before scanning it.
	if len(s) > 4*maxLen+maxRawLen {
		v.add(field, "%s must have at most %d characters; got %d bytes", what, maxLen, len(s))
		return ""
	}
	if !utf8.ValidString(s) {
		v.add(field, "%s must be valid UTF-8 text", what)
		return ""
	}
	s = strings.TrimSpace(s)
	if s == "" {
		if required {
			v.add(field, "%s is required", what)
		}
		return ""
	}
	if n := utf8.RuneCountInString(s); n > maxLen {
		v.add(field, "%s must have at most %d characters; got %d", what, maxLen, n)
		return s
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		v.add(field, "%s must not contain control characters such as tabs or line breaks; found U+%04X at position %d", what, r, utf8.RuneCountInString(s[:i])+1)
	}
	return s
}

func onlyDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func onlyAlnumUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && !isUpper(s[i]) {
			return false
		}
	}
	return true
}

// IsISPB reports whether s is an ISPB, a participant's identifier: exactly 8
// ASCII digits.
func IsISPB(s string) bool {
	if len(s) != 8 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
