package dict_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/dict"
)

// Canonical forms, written from DOMAIN.md independently of the code under test.
var (
	cpfRE   = regexp.MustCompile(`^[0-9]{11}$`)
	cnpjRE  = regexp.MustCompile(`^[0-9A-Z]{12}[0-9]{2}$`)
	phoneRE = regexp.MustCompile(`^\+[1-9]\d{1,14}$`)
	emailRE = regexp.MustCompile("^[a-z0-9.!#$&'*+\\/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
	evpRE   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// canonical reports whether s is a canonical key of type t.
func canonical(t dict.KeyType, s string) bool {
	switch t {
	case dict.KeyTypeCPF:
		return cpfRE.MatchString(s) && dict.ValidCPF(s)
	case dict.KeyTypeCNPJ:
		return cnpjRE.MatchString(s) && dict.ValidCNPJ(s)
	case dict.KeyTypePhone:
		return phoneRE.MatchString(s)
	case dict.KeyTypeEmail:
		return len(s) <= 77 && !strings.Contains(s, "%") && emailRE.MatchString(s)
	case dict.KeyTypeEVP:
		return evpRE.MatchString(s)
	}
	return false
}

// checkInvalid fails t unless err is a *dict.Error of kind invalid, reason
// EntryInvalid, on field.
func checkInvalid(t *testing.T, err error, field string) *dict.Error {
	t.Helper()
	var e *dict.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *dict.Error", err, err)
	}
	if e.Kind != dict.KindInvalid || e.Reason != dict.ReasonEntryInvalid || e.Field != field {
		t.Errorf("error kind/reason/field = %v/%q/%q, want %v/%q/%q (msg %q)",
			e.Kind, e.Reason, e.Field, dict.KindInvalid, dict.ReasonEntryInvalid, field, e.Msg)
	}
	if e.Msg == "" {
		t.Error("error has an empty message")
	}
	return e
}

var (
	email77 = strings.Repeat("a", 65) + "@example.com" // 65 + 12 = 77
	email78 = strings.Repeat("a", 66) + "@example.com"
)

func TestNormalizeKey(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name      string
		keyType   dict.KeyType
		raw       string
		want      string // when the key is valid
		wantField string // when it is not
		wantMsg   string // substring of the message, when set
	}{
		// CPF
		{name: "cpf canonical", keyType: dict.KeyTypeCPF, raw: "12345678909", want: "12345678909"},
		{name: "cpf formatted", keyType: dict.KeyTypeCPF, raw: "123.456.789-09", want: "12345678909"},
		{name: "cpf spaces", keyType: dict.KeyTypeCPF, raw: " 529 982 247 25 ", want: "52998224725"},
		{name: "cpf leading zeros", keyType: dict.KeyTypeCPF, raw: "000.000.001-91", want: "00000000191"},
		{name: "cpf second dv zero", keyType: dict.KeyTypeCPF, raw: "987.654.321-00", want: "98765432100"},
		{name: "cpf empty", keyType: dict.KeyTypeCPF, raw: "", wantField: "key", wantMsg: "CPF is required"},
		{name: "cpf only separators", keyType: dict.KeyTypeCPF, raw: "..-", wantField: "key", wantMsg: "got 0 digits"},
		{name: "cpf 10 digits", keyType: dict.KeyTypeCPF, raw: "123.456.789-0", wantField: "key", wantMsg: "CPF must have 11 digits with valid check digits; got 10 digits"},
		{name: "cpf 12 digits", keyType: dict.KeyTypeCPF, raw: "123456789091", wantField: "key", wantMsg: "got 12 digits"},
		{name: "cpf bad second dv", keyType: dict.KeyTypeCPF, raw: "12345678908", wantField: "key", wantMsg: "check digits"},
		{name: "cpf bad first dv", keyType: dict.KeyTypeCPF, raw: "123.456.789-19", wantField: "key", wantMsg: "check digits"},
		{name: "cpf all ones", keyType: dict.KeyTypeCPF, raw: "111.111.111-11", wantField: "key", wantMsg: "all 11 digits equal"},
		{name: "cpf all zeros", keyType: dict.KeyTypeCPF, raw: "00000000000", wantField: "key", wantMsg: "all 11 digits equal"},
		{name: "cpf letter", keyType: dict.KeyTypeCPF, raw: "1234567890a", wantField: "key", wantMsg: "found 'a' at position 11"},
		{name: "cpf slash", keyType: dict.KeyTypeCPF, raw: "123/456/789-09", wantField: "key", wantMsg: "only digits"},
		{name: "cpf tab", keyType: dict.KeyTypeCPF, raw: "123456789\t09", wantField: "key", wantMsg: `'\t'`},
		{name: "cpf fullwidth digits", keyType: dict.KeyTypeCPF, raw: "１２３４５６７８９０９", wantField: "key", wantMsg: "position 1"},
		{name: "cpf too long", keyType: dict.KeyTypeCPF, raw: strings.Repeat("1", 300), wantField: "key", wantMsg: "too long"},
		{name: "cpf with secret suffix", keyType: dict.KeyTypeCPF, raw: "12345678909secretsecret", wantField: "key"},

		// CNPJ
		{name: "cnpj canonical", keyType: dict.KeyTypeCNPJ, raw: "11222333000181", want: "11222333000181"},
		{name: "cnpj formatted", keyType: dict.KeyTypeCNPJ, raw: "11.222.333/0001-81", want: "11222333000181"},
		{name: "cnpj alnum RFB example", keyType: dict.KeyTypeCNPJ, raw: "12ABC34501DE35", want: "12ABC34501DE35"},
		{name: "cnpj alnum formatted", keyType: dict.KeyTypeCNPJ, raw: "12.ABC.345/01DE-35", want: "12ABC34501DE35"},
		{name: "cnpj alnum lower-case", keyType: dict.KeyTypeCNPJ, raw: "12.abc.345/01de-35", want: "12ABC34501DE35"},
		{name: "cnpj alnum spaces", keyType: dict.KeyTypeCNPJ, raw: " a1b2 c3d4 e5f6 68 ", want: "A1B2C3D4E5F668"},
		{name: "cnpj all letters", keyType: dict.KeyTypeCNPJ, raw: "ZZZZZZZZZZZZ62", want: "ZZZZZZZZZZZZ62"},
		{name: "cnpj leading zeros", keyType: dict.KeyTypeCNPJ, raw: "00.000.000/0001-91", want: "00000000000191"},
		{name: "cnpj alnum dv 61", keyType: dict.KeyTypeCNPJ, raw: "TESTE000000161", want: "TESTE000000161"},
		{name: "cnpj empty", keyType: dict.KeyTypeCNPJ, raw: "", wantField: "key", wantMsg: "CNPJ is required"},
		{name: "cnpj 13", keyType: dict.KeyTypeCNPJ, raw: "11.222.333/0001-8", wantField: "key", wantMsg: "got 13"},
		{name: "cnpj 15", keyType: dict.KeyTypeCNPJ, raw: "112223330001810", wantField: "key", wantMsg: "got 15"},
		{name: "cnpj bad dv", keyType: dict.KeyTypeCNPJ, raw: "11.222.333/0001-82", wantField: "key", wantMsg: "check digits"},
		{name: "cnpj alnum bad dv", keyType: dict.KeyTypeCNPJ, raw: "12ABC34501DE36", wantField: "key", wantMsg: "check digits"},
		{name: "cnpj alnum bad first dv", keyType: dict.KeyTypeCNPJ, raw: "12ABC34501DE45", wantField: "key", wantMsg: "check digits"},
		{name: "cnpj all zeros", keyType: dict.KeyTypeCNPJ, raw: "00000000000000", wantField: "key", wantMsg: "all 14 characters equal"},
		{name: "cnpj all ones", keyType: dict.KeyTypeCNPJ, raw: "11.111.111/1111-11", wantField: "key", wantMsg: "all 14 characters equal"},
		{name: "cnpj letters as dv", keyType: dict.KeyTypeCNPJ, raw: "12ABC34501DEAB", wantField: "key", wantMsg: "2 check digits"},
		{name: "cnpj underscore", keyType: dict.KeyTypeCNPJ, raw: "12_ABC_34501DE35", wantField: "key", wantMsg: "'_' at position 3"},
		{name: "cnpj accented letter", keyType: dict.KeyTypeCNPJ, raw: "12ÀBC34501DE35", wantField: "key", wantMsg: "'À' at position 3"},
		{name: "cnpj kelvin sign", keyType: dict.KeyTypeCNPJ, raw: "12ABC34501\u212A35", wantField: "key"},
		{name: "cnpj too long", keyType: dict.KeyTypeCNPJ, raw: strings.Repeat(".", 257), wantField: "key", wantMsg: "too long"},

		// PHONE
		{name: "phone canonical", keyType: dict.KeyTypePhone, raw: "+5561988880000", want: "+5561988880000"},
		{name: "phone formatted", keyType: dict.KeyTypePhone, raw: "+55 (61) 98888-0000", want: "+5561988880000"},
		{name: "phone dots", keyType: dict.KeyTypePhone, raw: "+55.61.98888.0000", want: "+5561988880000"},
		{name: "phone us", keyType: dict.KeyTypePhone, raw: "+1 (415) 555-2671", want: "+14155552671"},
		{name: "phone uk", keyType: dict.KeyTypePhone, raw: "+44 20 7946 0958", want: "+442079460958"},
		{name: "phone shortest", keyType: dict.KeyTypePhone, raw: "+12", want: "+12"},
		{name: "phone longest", keyType: dict.KeyTypePhone, raw: "+123456789012345", want: "+123456789012345"},
		{name: "phone empty", keyType: dict.KeyTypePhone, raw: "", wantField: "key", wantMsg: "phone is required"},
		{name: "phone only separators", keyType: dict.KeyTypePhone, raw: " ( ) ", wantField: "key", wantMsg: "phone is required"},
		{name: "phone without plus", keyType: dict.KeyTypePhone, raw: "5511987654321", wantField: "key", wantMsg: "leading '+' is missing"},
		{name: "phone formatted without plus", keyType: dict.KeyTypePhone, raw: "(61) 98888-0000", wantField: "key", wantMsg: "leading '+' is missing"},
		{name: "phone country code zero", keyType: dict.KeyTypePhone, raw: "+055 61 98888-0000", wantField: "key", wantMsg: "must not start with 0"},
		{name: "phone plus zero", keyType: dict.KeyTypePhone, raw: "+0", wantField: "key", wantMsg: "must not start with 0"},
		{name: "phone 16 digits", keyType: dict.KeyTypePhone, raw: "+1234567890123456", wantField: "key", wantMsg: "got 16 digits"},
		{name: "phone way too many digits", keyType: dict.KeyTypePhone, raw: "+" + strings.Repeat("9", 200), wantField: "key", wantMsg: "got 200 digits"},
		{name: "phone 1 digit", keyType: dict.KeyTypePhone, raw: "+1", wantField: "key", wantMsg: "got 1 digits"},
		{name: "phone plus only", keyType: dict.KeyTypePhone, raw: "+", wantField: "key", wantMsg: "got 0 digits"},
		{name: "phone double plus", keyType: dict.KeyTypePhone, raw: "++5561988880000", wantField: "key", wantMsg: "only at the start"},
		{name: "phone plus in the middle", keyType: dict.KeyTypePhone, raw: "55+61988880000", wantField: "key", wantMsg: "only at the start"},
		{name: "phone letter", keyType: dict.KeyTypePhone, raw: "+55 61 9888a-0000", wantField: "key", wantMsg: "'a' at position 12"},
		{name: "phone slash", keyType: dict.KeyTypePhone, raw: "+55/61988880000", wantField: "key", wantMsg: "'/'"},
		{name: "phone too long", keyType: dict.KeyTypePhone, raw: strings.Repeat(" ", 257), wantField: "key", wantMsg: "too long"},

		// EMAIL
		{name: "email canonical", keyType: dict.KeyTypeEmail, raw: "fulano@example.com", want: "fulano@example.com"},
		{name: "email upper-case", keyType: dict.KeyTypeEmail, raw: "Fulano.Beltrano@Example.COM", want: "fulano.beltrano@example.com"},
		{name: "email surrounding spaces", keyType: dict.KeyTypeEmail, raw: "  fulano@example.com.br \t", want: "fulano@example.com.br"},
		{name: "email single-label domain", keyType: dict.KeyTypeEmail, raw: "a@b", want: "a@b"},
		{name: "email all symbols", keyType: dict.KeyTypeEmail, raw: "x!#$&'*+/=?^_`{|}~-@example.com", want: "x!#$&'*+/=?^_`{|}~-@example.com"},
		{name: "email hyphenated domain", keyType: dict.KeyTypeEmail, raw: "a@my-bank.com.br", want: "a@my-bank.com.br"},
		{name: "email 77 characters", keyType: dict.KeyTypeEmail, raw: strings.ToUpper(email77), want: email77},
		{name: "email empty", keyType: dict.KeyTypeEmail, raw: "", wantField: "key", wantMsg: "email is required"},
		{name: "email blank", keyType: dict.KeyTypeEmail, raw: "   ", wantField: "key", wantMsg: "email is required"},
		{name: "email percent", keyType: dict.KeyTypeEmail, raw: "fulano%x@example.com", wantField: "key", wantMsg: "must not contain '%'"},
		{name: "email 78 characters", keyType: dict.KeyTypeEmail, raw: email78, wantField: "key", wantMsg: "at most 77 characters; got 78"},
		{name: "email no at", keyType: dict.KeyTypeEmail, raw: "fulano.example.com", wantField: "key", wantMsg: "exactly one '@'"},
		{name: "email two ats", keyType: dict.KeyTypeEmail, raw: "a@b@example.com", wantField: "key", wantMsg: "exactly one '@'"},
		{name: "email empty local", keyType: dict.KeyTypeEmail, raw: "@example.com", wantField: "key", wantMsg: "BCB's pattern"},
		{name: "email empty domain", keyType: dict.KeyTypeEmail, raw: "fulano@", wantField: "key", wantMsg: "BCB's pattern"},
		{name: "email label starts with hyphen", keyType: dict.KeyTypeEmail, raw: "fulano@-example.com", wantField: "key"},
		{name: "email label ends with hyphen", keyType: dict.KeyTypeEmail, raw: "fulano@example-.com", wantField: "key"},
		{name: "email empty label", keyType: dict.KeyTypeEmail, raw: "fulano@example..com", wantField: "key"},
		{name: "email trailing dot", keyType: dict.KeyTypeEmail, raw: "fulano@example.com.", wantField: "key"},
		{name: "email label of 64", keyType: dict.KeyTypeEmail, raw: "a@" + strings.Repeat("b", 64) + ".com", wantField: "key"},
		{name: "email inner space", keyType: dict.KeyTypeEmail, raw: "ful ano@example.com", wantField: "key"},
		{name: "email parentheses", keyType: dict.KeyTypeEmail, raw: "(fulano)@example.com", wantField: "key"},
		{name: "email non-ascii", keyType: dict.KeyTypeEmail, raw: "fulano@exámple.com", wantField: "key", wantMsg: "only ASCII"},
		{name: "email kelvin sign", keyType: dict.KeyTypeEmail, raw: "\u212Aelvin@example.com", wantField: "key", wantMsg: "only ASCII"},
		{name: "email too long", keyType: dict.KeyTypeEmail, raw: strings.Repeat("a", 250) + "@example.com", wantField: "key", wantMsg: "too long"},

		// EVP
		{name: "evp canonical", keyType: dict.KeyTypeEVP, raw: "123e4567-e89b-12d3-a456-426614174000", want: "123e4567-e89b-12d3-a456-426614174000"},
		{name: "evp upper-case", keyType: dict.KeyTypeEVP, raw: "123E4567-E89B-12D3-A456-426614174000", want: "123e4567-e89b-12d3-a456-426614174000"},
		{name: "evp nil uuid", keyType: dict.KeyTypeEVP, raw: "00000000-0000-0000-0000-000000000000", want: "00000000-0000-0000-0000-000000000000"},
		{name: "evp empty", keyType: dict.KeyTypeEVP, raw: "", wantField: "key", wantMsg: "EVP is required"},
		{name: "evp without hyphens", keyType: dict.KeyTypeEVP, raw: "123e4567e89b12d3a456426614174000", wantField: "key", wantMsg: "got 32 characters"},
		{name: "evp braces", keyType: dict.KeyTypeEVP, raw: "{123e4567-e89b-12d3-a456-426614174000}", wantField: "key", wantMsg: "got 38 characters"},
		{name: "evp urn", keyType: dict.KeyTypeEVP, raw: "urn:uuid:123e4567-e89b-12d3-a456-426614174000", wantField: "key"},
		{name: "evp not hex", keyType: dict.KeyTypeEVP, raw: "123e4567-e89b-12d3-a456-42661417400g", wantField: "key", wantMsg: "'g' at position 36"},
		{name: "evp hyphen misplaced", keyType: dict.KeyTypeEVP, raw: "123e4567e-89b-12d3-a456-426614174000", wantField: "key", wantMsg: "expected '-' at position 9"},
		{name: "evp surrounding spaces", keyType: dict.KeyTypeEVP, raw: " 123e4567-e89b-12d3-a456-42661417400 ", wantField: "key"},
		{name: "evp too long", keyType: dict.KeyTypeEVP, raw: strings.Repeat("a", 1000), wantField: "key", wantMsg: "too long"},

		// type
		{name: "unspecified type", keyType: dict.KeyTypeUnspecified, raw: "12345678909", wantField: "key_type"},
		{name: "unknown type", keyType: dict.KeyType(42), raw: "12345678909", wantField: "key_type"},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := dict.NormalizeKey(test.keyType, test.raw)
			if test.wantField == "" {
				if err != nil {
					t.Fatalf("NormalizeKey(%v, %q) error: %v", test.keyType, test.raw, err)
				}
				if diff := cmp.Diff(test.want, got); diff != "" {
					t.Errorf("NormalizeKey(%v, %q) mismatch (-want +got):\n%s", test.keyType, test.raw, diff)
				}
				if !canonical(test.keyType, got) {
					t.Errorf("NormalizeKey(%v, %q) = %q, not canonical", test.keyType, test.raw, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("NormalizeKey(%v, %q) = %q, want an error on %q", test.keyType, test.raw, got, test.wantField)
			}
			e := checkInvalid(t, err, test.wantField)
			if !strings.Contains(e.Msg, test.wantMsg) {
				t.Errorf("message %q does not contain %q", e.Msg, test.wantMsg)
			}
			if len(test.raw) >= 6 && strings.Contains(e.Msg, test.raw) {
				t.Errorf("message %q repeats the input", e.Msg)
			}
			if len(e.Msg) > 400 {
				t.Errorf("message of %d bytes, want a bounded message", len(e.Msg))
			}
		})
	}
}

func TestNormalizeTaxID(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name      string
		ownerType dict.OwnerType
		raw       string
		want      string
		wantField string
	}{
		{name: "natural formatted cpf", ownerType: dict.OwnerTypeNaturalPerson, raw: "123.456.789-09", want: "12345678909"},
		{name: "legal numeric cnpj", ownerType: dict.OwnerTypeLegalPerson, raw: "11.222.333/0001-81", want: "11222333000181"},
		{name: "legal alnum cnpj lower-case", ownerType: dict.OwnerTypeLegalPerson, raw: "12.abc.345/01de-35", want: "12ABC34501DE35"},
		{name: "natural with cnpj", ownerType: dict.OwnerTypeNaturalPerson, raw: "11222333000181", wantField: "owner.tax_id"},
		{name: "legal with cpf", ownerType: dict.OwnerTypeLegalPerson, raw: "12345678909", wantField: "owner.tax_id"},
		{name: "natural bad dv", ownerType: dict.OwnerTypeNaturalPerson, raw: "12345678900", wantField: "owner.tax_id"},
		{name: "legal all same", ownerType: dict.OwnerTypeLegalPerson, raw: "00000000000000", wantField: "owner.tax_id"},
		{name: "empty", ownerType: dict.OwnerTypeNaturalPerson, raw: "", wantField: "owner.tax_id"},
		{name: "unspecified owner", ownerType: dict.OwnerTypeUnspecified, raw: "12345678909", wantField: "owner.type"},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := dict.NormalizeTaxID(test.ownerType, test.raw)
			if test.wantField != "" {
				if err == nil {
					t.Fatalf("NormalizeTaxID(%v, %q) = %q, want an error", test.ownerType, test.raw, got)
				}
				checkInvalid(t, err, test.wantField)
				return
			}
			if err != nil {
				t.Fatalf("NormalizeTaxID(%v, %q) error: %v", test.ownerType, test.raw, err)
			}
			if diff := cmp.Diff(test.want, got); diff != "" {
				t.Errorf("NormalizeTaxID(%v, %q) mismatch (-want +got):\n%s", test.ownerType, test.raw, diff)
			}
		})
	}
}

func TestValidCPFAndCNPJ(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		s        string
		cpf, cnp bool
	}{
		{s: "12345678909", cpf: true},
		{s: "52998224725", cpf: true},
		{s: "123.456.789-09"},
		{s: "12345678908"},
		{s: "11111111111"},
		{s: "11222333000181", cnp: true},
		{s: "12ABC34501DE35", cnp: true},
		{s: "ZZZZZZZZZZZZ62", cnp: true},
		{s: "12abc34501de35"}, // canonical form is upper-case
		{s: "12.ABC.345/01DE-35"},
		{s: "00000000000000"},
		{s: "12ABC34501DE36"},
		{s: ""},
	} {
		if got := dict.ValidCPF(test.s); got != test.cpf {
			t.Errorf("ValidCPF(%q) = %v, want %v", test.s, got, test.cpf)
		}
		if got := dict.ValidCNPJ(test.s); got != test.cnp {
			t.Errorf("ValidCNPJ(%q) = %v, want %v", test.s, got, test.cnp)
		}
	}
}

func TestNewEVP(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		k := dict.NewEVP()
		if !evpRE.MatchString(k) || k[14] != '4' || !strings.ContainsRune("89ab", rune(k[19])) {
			t.Fatalf("NewEVP() = %q, want a lower-case version 4 UUID", k)
		}
		if got, err := dict.NormalizeKey(dict.KeyTypeEVP, k); err != nil || got != k {
			t.Fatalf("NormalizeKey(EVP, %q) = %q, %v; want it unchanged", k, got, err)
		}
		if seen[k] {
			t.Fatalf("NewEVP() repeated %q", k)
		}
		seen[k] = true
	}
}

func ExampleNormalizeKey() {
	for _, in := range []struct {
		t   dict.KeyType
		raw string
	}{
		{dict.KeyTypeCPF, "123.456.789-09"},
		{dict.KeyTypeCNPJ, "12.abc.345/01de-35"},
		{dict.KeyTypePhone, "+55 (61) 98888-0000"},
		{dict.KeyTypeEmail, " Fulano@Example.COM"},
		{dict.KeyTypeEVP, "123E4567-E89B-12D3-A456-426614174000"},
		{dict.KeyTypeCPF, "123.456.789-0"},
		{dict.KeyTypePhone, "61 98888-0000"},
	} {
		key, err := dict.NormalizeKey(in.t, in.raw)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(key)
	}
	// Output:
	// 12345678909
	// 12ABC34501DE35
	// +5561988880000
	// fulano@example.com
	// 123e4567-e89b-12d3-a456-426614174000
	// error: key: CPF must have 11 digits with valid check digits; got 10 digits
	// error: key: phone must be in E.164 format, starting with '+' and the country code, e.g. +5561988880000; the leading '+' is missing
}

// checkNormalized asserts the properties every normaliser must have, for any
// input: errors are *dict.Error of kind invalid on a named field; results are
// canonical, and normalising them again changes nothing.
func checkNormalized(t *testing.T, keyType dict.KeyType, raw, got string, err error) {
	t.Helper()
	if err != nil {
		var e *dict.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is %T, want *dict.Error", err, err)
		}
		if e.Kind != dict.KindInvalid || e.Field == "" || e.Msg == "" {
			t.Fatalf("error kind %v, field %q, msg %q; want invalid with a field and a message", e.Kind, e.Field, e.Msg)
		}
		if len(e.Msg) > 400 {
			t.Fatalf("message of %d bytes", len(e.Msg))
		}
		if got != "" {
			t.Fatalf("result %q alongside an error", got)
		}
		return
	}
	if !canonical(keyType, got) {
		t.Fatalf("NormalizeKey(%v, %q) = %q, not canonical", keyType, raw, got)
	}
	again, err := dict.NormalizeKey(keyType, got)
	if err != nil || again != got {
		t.Fatalf("NormalizeKey(%v, %q) = %q, %v; want %q unchanged", keyType, got, again, err, got)
	}
}

// strip removes the characters in cut from s, as the spec lets formatted input do.
func strip(s, cut string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune(cut, r) {
			return -1
		}
		return r
	}, s)
}

func FuzzNormalizeKeyCPF(f *testing.F) {
	for _, s := range []string{"12345678909", "123.456.789-09", " 529 982 247 25", "11111111111", "1234567890a", "", "..--  ", "１２３４５６７８９０９"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := dict.NormalizeKey(dict.KeyTypeCPF, raw)
		checkNormalized(t, dict.KeyTypeCPF, raw, got, err)
		// Accepted exactly when the spec says so.
		want := strip(raw, ".- ")
		if ok := len(raw) <= 256 && cpfRE.MatchString(want) && dict.ValidCPF(want); ok != (err == nil) || ok && got != want {
			t.Fatalf("NormalizeKey(CPF, %q) = %q, %v; want %q, ok %v", raw, got, err, want, ok)
		}
	})
}

func FuzzNormalizeKeyCNPJ(f *testing.F) {
	for _, s := range []string{"11222333000181", "11.222.333/0001-81", "12.ABC.345/01DE-35", "12abc34501de35", "00000000000000", "12ABC34501DEAB", "12ÀBC34501DE35", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := dict.NormalizeKey(dict.KeyTypeCNPJ, raw)
		checkNormalized(t, dict.KeyTypeCNPJ, raw, got, err)
		want := strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' {
				return r - 'a' + 'A'
			}
			return r
		}, strip(raw, "./- "))
		if ok := len(raw) <= 256 && cnpjRE.MatchString(want) && dict.ValidCNPJ(want); ok != (err == nil) || ok && got != want {
			t.Fatalf("NormalizeKey(CNPJ, %q) = %q, %v; want %q, ok %v", raw, got, err, want, ok)
		}
	})
}

func FuzzNormalizeKeyPhone(f *testing.F) {
	for _, s := range []string{"+5561988880000", "+55 (61) 98888-0000", "+1.415.555.2671", "5561988880000", "+0", "++1", "+1234567890123456", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := dict.NormalizeKey(dict.KeyTypePhone, raw)
		checkNormalized(t, dict.KeyTypePhone, raw, got, err)
		want := strip(raw, " ()-.")
		if ok := len(raw) <= 256 && phoneRE.MatchString(want); ok != (err == nil) || ok && got != want {
			t.Fatalf("NormalizeKey(PHONE, %q) = %q, %v; want %q, ok %v", raw, got, err, want, ok)
		}
	})
}

func FuzzNormalizeKeyEmail(f *testing.F) {
	for _, s := range []string{"fulano@example.com", " Fulano@Example.COM ", "a%b@c", email78, "a@-b.com", "\u212A@example.com", "a@b@c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := dict.NormalizeKey(dict.KeyTypeEmail, raw)
		checkNormalized(t, dict.KeyTypeEmail, raw, got, err)
		// Only ASCII letters are lower-cased; anything else fails the pattern.
		want := strings.Map(func(r rune) rune {
			if 'A' <= r && r <= 'Z' {
				return r - 'A' + 'a'
			}
			return r
		}, strings.TrimSpace(raw))
		if ok := len(raw) <= 256 && canonical(dict.KeyTypeEmail, want); ok != (err == nil) || ok && got != want {
			t.Fatalf("NormalizeKey(EMAIL, %q) = %q, %v; want %q, ok %v", raw, got, err, want, ok)
		}
	})
}

func FuzzNormalizeKeyEVP(f *testing.F) {
	for _, s := range []string{"123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000", "123e4567e89b12d3a456426614174000", "{123e4567-e89b-12d3-a456-426614174000}", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := dict.NormalizeKey(dict.KeyTypeEVP, raw)
		checkNormalized(t, dict.KeyTypeEVP, raw, got, err)
		want := strings.Map(func(r rune) rune {
			if 'A' <= r && r <= 'F' {
				return r - 'A' + 'a'
			}
			return r
		}, raw)
		if ok := evpRE.MatchString(want); ok != (err == nil) || ok && got != want {
			t.Fatalf("NormalizeKey(EVP, %q) = %q, %v; want %q, ok %v", raw, got, err, want, ok)
		}
	})
}

func FuzzNormalizeTaxID(f *testing.F) {
	for _, s := range []struct {
		t   uint8
		raw string
	}{
		{1, "123.456.789-09"}, {2, "12.abc.345/01de-35"}, {2, "11222333000181"}, {1, "11222333000181"}, {0, "12345678909"}, {7, ""},
	} {
		f.Add(s.t, s.raw)
	}
	f.Fuzz(func(t *testing.T, typ uint8, raw string) {
		ownerType := dict.OwnerType(typ % 4)
		got, err := dict.NormalizeTaxID(ownerType, raw)
		var keyType dict.KeyType
		switch ownerType {
		case dict.OwnerTypeNaturalPerson:
			keyType = dict.KeyTypeCPF
		case dict.OwnerTypeLegalPerson:
			keyType = dict.KeyTypeCNPJ
		default:
			if err == nil {
				t.Fatalf("NormalizeTaxID(%v, %q) = %q, want an error", ownerType, raw, got)
			}
			checkInvalid(t, err, "owner.type")
			return
		}
		checkNormalized(t, keyType, raw, got, err)
		if err != nil {
			checkInvalid(t, err, "owner.tax_id")
		}
		// A tax id follows the rules of the key of the same type.
		key, keyErr := dict.NormalizeKey(keyType, raw)
		if key != got || (keyErr == nil) != (err == nil) {
			t.Fatalf("NormalizeTaxID(%v, %q) = %q, %v; NormalizeKey(%v) = %q, %v", ownerType, raw, got, err, keyType, key, keyErr)
		}
	})
}
