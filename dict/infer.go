package dict

import "strings"

// InferKeyType guesses the type of a key from its form, for requests that
// name a key without its type (GetKey, CheckKeys). The canonical forms of the
// five types are disjoint, so the guess is exact for canonical input; for
// formatted input it follows the most specific marker: '@' is an email, a
// leading '+' a phone, a UUID an EVP, then 11 digits a CPF and anything that
// reduces to 14 characters a CNPJ. It returns [KeyTypeUnspecified] when no
// type fits, and the caller reports the key as invalid.
func InferKeyType(raw string) KeyType {
	s := strings.TrimSpace(raw)
	switch {
	case s == "":
		return KeyTypeUnspecified
	case strings.Contains(s, "@"):
		return KeyTypeEmail
	case strings.HasPrefix(s, "+"):
		return KeyTypePhone
	case len(s) == 36 && strings.Count(s, "-") == 4:
		return KeyTypeEVP
	}
	var n int
	digitsOnly := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.' || c == '-' || c == '/' || c == ' ':
		case c >= '0' && c <= '9':
			n++
		case (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'):
			n++
			digitsOnly = false
		default:
			return KeyTypeUnspecified
		}
	}
	switch {
	case n == 11 && digitsOnly:
		return KeyTypeCPF
	case n == 14:
		return KeyTypeCNPJ
	}
	return KeyTypeUnspecified
}

// NormalizeAnyKey normalises a key whose type may be unspecified, inferring
// it with [InferKeyType] when t is [KeyTypeUnspecified].
func NormalizeAnyKey(t KeyType, raw string) (KeyType, string, error) {
	if t == KeyTypeUnspecified {
		t = InferKeyType(raw)
		if t == KeyTypeUnspecified {
			return t, "", Invalid("key", "key is not a CPF, CNPJ, phone (+E.164), email or EVP (UUID); set key_type to say which it is meant to be")
		}
	}
	k, err := NormalizeKey(t, raw)
	return t, k, err
}

// NormalizeTaxIDAnyType normalises a CPF (11 digits) or CNPJ (14
// characters), telling them apart by length after formatting is removed.
func NormalizeTaxIDAnyType(field, raw string) (OwnerType, string, error) {
	switch InferKeyType(raw) {
	case KeyTypeCPF:
		id, err := NormalizeTaxID(OwnerTypeNaturalPerson, raw)
		return OwnerTypeNaturalPerson, id, renameField(err, field)
	case KeyTypeCNPJ:
		id, err := NormalizeTaxID(OwnerTypeLegalPerson, raw)
		return OwnerTypeLegalPerson, id, renameField(err, field)
	}
	return OwnerTypeUnspecified, "", Invalid(field, "%s must be a CPF (11 digits) or a CNPJ (14 characters)", field)
}

func renameField(err error, field string) error {
	if e, ok := err.(*Error); ok && e != nil {
		c := *e
		c.Field = field
		return &c
	}
	return err
}

// ValidateEndToEndID checks a PIX end-to-end id: 'E', the ISPB of the
// payer's participant (8 digits), the date and time yyyyMMddHHmm (12
// digits) and 11 alphanumeric characters, 32 in all. The ISPB must be the
// caller's: a PSP looks keys up only for payments it originates.
func ValidateEndToEndID(id, participant string) error {
	const field = "end_to_end_id"
	if len(id) != 32 || id[0] != 'E' {
		return Invalid(field, "end_to_end_id must be 32 characters starting with 'E' (E + ISPB + yyyyMMddHHmm + 11 alphanumerics)")
	}
	for i := 1; i < 21; i++ {
		if id[i] < '0' || id[i] > '9' {
			return Invalid(field, "end_to_end_id characters 2-21 must be digits (ISPB and yyyyMMddHHmm)")
		}
	}
	for i := 21; i < 32; i++ {
		c := id[i]
		if !(c >= '0' && c <= '9') && !(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') {
			return Invalid(field, "end_to_end_id must end in 11 alphanumeric characters")
		}
	}
	if id[1:9] != participant {
		return Invalid(field, "end_to_end_id must carry the caller's participant ISPB %s", participant)
	}
	return nil
}
