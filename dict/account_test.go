package dict_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/dict"
)

var opened = time.Date(2020, 3, 15, 0, 0, 0, 0, time.UTC)

func validAccount() dict.Account {
	return dict.Account{Participant: "12345678", Branch: "0001", Number: "0007654321", Type: dict.AccountTypeCACC, OpenedAt: opened}
}

// checkViolations asserts that err is one invalid *dict.Error naming the
// first bad field, with every bad field (in order) in Violations.
func checkViolations(t *testing.T, err error, wantFields []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want violations on %v", wantFields)
	}
	e := checkInvalid(t, err, wantFields[0])
	var gotFields []string
	for _, v := range e.Violations {
		gotFields = append(gotFields, v.Field)
		if v.Rule == "" {
			t.Errorf("violation on %q has no rule", v.Field)
		}
	}
	if diff := cmp.Diff(wantFields, gotFields); diff != "" {
		t.Errorf("violation fields mismatch (-want +got):\n%s", diff)
	}
	if len(e.Violations) > 0 && (e.Violations[0].Field != e.Field || e.Violations[0].Rule != e.Msg) {
		t.Errorf("first violation %+v differs from the error's field %q and message %q", e.Violations[0], e.Field, e.Msg)
	}
}

func TestAccountNormalize(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name       string
		edit       func(*dict.Account)
		wantFields []string // nil: valid
		wantMsg    string   // substring of the first message, when set
	}{
		{name: "valid", edit: func(*dict.Account) {}},
		{name: "no branch", edit: func(a *dict.Account) { a.Branch = "" }},
		{name: "one-digit branch and number", edit: func(a *dict.Account) { a.Branch, a.Number = "1", "9" }},
		{name: "20-digit number", edit: func(a *dict.Account) { a.Number = strings.Repeat("9", 20) }},
		{name: "each type", edit: func(a *dict.Account) { a.Type = dict.AccountTypeTRAN }},
		{name: "savings", edit: func(a *dict.Account) { a.Type = dict.AccountTypeSVGS }},
		{name: "salary", edit: func(a *dict.Account) { a.Type = dict.AccountTypeSLRY }},
		{name: "participant 7 digits", edit: func(a *dict.Account) { a.Participant = "1234567" },
			wantFields: []string{"account.participant"}, wantMsg: "exactly 8 digits; got 7"},
		{name: "participant 9 digits", edit: func(a *dict.Account) { a.Participant = "123456789" },
			wantFields: []string{"account.participant"}, wantMsg: "got 9 characters"},
		{name: "participant letters", edit: func(a *dict.Account) { a.Participant = "1234567X" },
			wantFields: []string{"account.participant"}, wantMsg: "'X' at position 8"},
		{name: "participant missing", edit: func(a *dict.Account) { a.Participant = "" },
			wantFields: []string{"account.participant"}, wantMsg: "required"},
		{name: "branch 5 digits", edit: func(a *dict.Account) { a.Branch = "00001" },
			wantFields: []string{"account.branch"}, wantMsg: "1 to 4 digits"},
		{name: "branch with check digit", edit: func(a *dict.Account) { a.Branch = "001-9" },
			wantFields: []string{"account.branch"}},
		{name: "branch with space", edit: func(a *dict.Account) { a.Branch = " 01" },
			wantFields: []string{"account.branch"}, wantMsg: "digits only"},
		{name: "number missing", edit: func(a *dict.Account) { a.Number = "" },
			wantFields: []string{"account.number"}, wantMsg: "account number is required"},
		{name: "number 21 digits", edit: func(a *dict.Account) { a.Number = strings.Repeat("1", 21) },
			wantFields: []string{"account.number"}, wantMsg: "1 to 20 digits; got 21"},
		{name: "number with dash", edit: func(a *dict.Account) { a.Number = "765432-1" },
			wantFields: []string{"account.number"}, wantMsg: "'-' at position 7"},
		{name: "number huge", edit: func(a *dict.Account) { a.Number = strings.Repeat("1", 1<<20) },
			wantFields: []string{"account.number"}},
		{name: "type unspecified", edit: func(a *dict.Account) { a.Type = dict.AccountTypeUnspecified },
			wantFields: []string{"account.type"}, wantMsg: "CACC, SVGS, SLRY or TRAN"},
		{name: "type unknown", edit: func(a *dict.Account) { a.Type = 99 },
			wantFields: []string{"account.type"}},
		{name: "no opening date", edit: func(a *dict.Account) { a.OpenedAt = time.Time{} },
			wantFields: []string{"account.opened_at"}},
		{name: "everything wrong", edit: func(a *dict.Account) { *a = dict.Account{Branch: "x"} },
			wantFields: []string{"account.participant", "account.branch", "account.number", "account.type", "account.opened_at"}},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			in := validAccount()
			test.edit(&in)
			got, err := in.Normalize()
			if test.wantFields == nil {
				if err != nil {
					t.Fatalf("Normalize(%+v) error: %v", in, err)
				}
				if diff := cmp.Diff(in, got); diff != "" {
					t.Errorf("Normalize mismatch (-want +got):\n%s", diff)
				}
				return
			}
			checkViolations(t, err, test.wantFields)
			var e *dict.Error
			if errors.As(err, &e) && !strings.Contains(e.Msg, test.wantMsg) {
				t.Errorf("message %q does not contain %q", e.Msg, test.wantMsg)
			}
			if e != nil && len(e.Msg) > 400 {
				t.Errorf("message of %d bytes", len(e.Msg))
			}
		})
	}
}

func TestOwnerNormalize(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name       string
		in         dict.Owner
		want       dict.Owner
		wantFields []string
	}{
		{
			name: "natural person formatted",
			in:   dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "123.456.789-09", Name: "  Fulano de Tal "},
			want: dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Fulano de Tal"},
		},
		{
			name: "legal person alnum",
			in:   dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "12.abc.345/01de-35", Name: "Padaria São João Ltda", TradeName: " Padaria S&J "},
			want: dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "12ABC34501DE35", Name: "Padaria São João Ltda", TradeName: "Padaria S&J"},
		},
		{
			name: "legal person without trade name",
			in:   dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "11222333000181", Name: "Empresa"},
			want: dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "11222333000181", Name: "Empresa"},
		},
		{
			name: "name of 150 characters",
			in:   dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: strings.Repeat("ã", 150)},
			want: dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: strings.Repeat("ã", 150)},
		},
		{
			name: "trade name of 100 characters",
			in:   dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "11222333000181", Name: "E", TradeName: strings.Repeat("ç", 100)},
			want: dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "11222333000181", Name: "E", TradeName: strings.Repeat("ç", 100)},
		},
		{
			name:       "type unspecified",
			in:         dict.Owner{TaxID: "12345678909", Name: "Fulano"},
			wantFields: []string{"owner.type"},
		},
		{
			name:       "natural person with cnpj",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "11222333000181", Name: "Fulano"},
			wantFields: []string{"owner.tax_id"},
		},
		{
			name:       "legal person with bad cnpj",
			in:         dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "12ABC34501DE36", Name: "Empresa"},
			wantFields: []string{"owner.tax_id"},
		},
		{
			name:       "name missing",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: " \t "},
			wantFields: []string{"owner.name"},
		},
		{
			name:       "name of 151 characters",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: strings.Repeat("a", 151)},
			wantFields: []string{"owner.name"},
		},
		{
			name:       "name huge",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: strings.Repeat("a", 1<<20)},
			wantFields: []string{"owner.name"},
		},
		{
			name:       "name with line break",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Fulano\nde Tal"},
			wantFields: []string{"owner.name"},
		},
		{
			name:       "name with NUL",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Fulano\x00"},
			wantFields: []string{"owner.name"},
		},
		{
			name:       "name not UTF-8",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Jo\xe3o"},
			wantFields: []string{"owner.name"},
		},
		{
			name:       "trade name on natural person",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Fulano", TradeName: "Fulano ME"},
			wantFields: []string{"owner.trade_name"},
		},
		{
			name:       "trade name of 101 characters",
			in:         dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "11222333000181", Name: "E", TradeName: strings.Repeat("b", 101)},
			wantFields: []string{"owner.trade_name"},
		},
		{
			name:       "trade name with tab",
			in:         dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "11222333000181", Name: "E", TradeName: "Loja\tCentro"},
			wantFields: []string{"owner.trade_name"},
		},
		{
			name:       "everything wrong",
			in:         dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "123", TradeName: "x"},
			wantFields: []string{"owner.tax_id", "owner.name", "owner.trade_name"},
		},
		{
			name:       "no type, no name, long trade name",
			in:         dict.Owner{TradeName: strings.Repeat("b", 101)},
			wantFields: []string{"owner.type", "owner.name", "owner.trade_name"},
		},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := test.in.Normalize()
			if test.wantFields != nil {
				checkViolations(t, err, test.wantFields)
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%+v) error: %v", test.in, err)
			}
			if diff := cmp.Diff(test.want, got); diff != "" {
				t.Errorf("Normalize mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMaskTaxIDForPayer(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		in, want string
	}{
		{"12345678909", "***.456.789-**"},
		{"00000000191", "***.000.001-**"},
		{"11222333000181", "11222333000181"},
		{"12ABC34501DE35", "12ABC34501DE35"},
		{"123.456.789-09", "***"},
		{"", "***"},
		{"secret", "***"},
	} {
		if diff := cmp.Diff(test.want, dict.MaskTaxIDForPayer(test.in)); diff != "" {
			t.Errorf("MaskTaxIDForPayer(%q) mismatch (-want +got):\n%s", test.in, diff)
		}
	}
}

func TestMaskForLog(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		in, want string
	}{
		{"12345678909", "123******09"},
		{"12ABC34501DE35", "12A*********35"},
		{"+5561988880000", "+55*********00"},
		{"123e4567-e89b-12d3-a456-426614174000", "123*******************************00"},
		{"fulano@example.com", "f*****@example.com"},
		{"a@example.com", "*@example.com"},
		{"@example.com", "@example.com"},
		{"abcde", "a***e"},
		{"abcd", "a***"},
		{"abc", "***"},
		{"", ""},
		{"ab\ncdefgh\nij", "ab********ij"}, // the kept '\n' is masked too
		{strings.Repeat("9", 1000), "999" + strings.Repeat("*", 32) + "99"},
	} {
		if diff := cmp.Diff(test.want, dict.MaskForLog(test.in)); diff != "" {
			t.Errorf("MaskForLog(%q) mismatch (-want +got):\n%s", test.in, diff)
		}
	}
}

func TestMaxKeysPerAccount(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		t    dict.OwnerType
		want int
	}{
		{dict.OwnerTypeNaturalPerson, 5},
		{dict.OwnerTypeLegalPerson, 20},
		{dict.OwnerTypeUnspecified, 0},
	} {
		if got := dict.MaxKeysPerAccount(test.t); got != test.want {
			t.Errorf("MaxKeysPerAccount(%v) = %d, want %d", test.t, got, test.want)
		}
	}
}

var (
	ispbRE   = regexp.MustCompile(`^[0-9]{8}$`)
	branchRE = regexp.MustCompile(`^[0-9]{0,4}$`)
	numberRE = regexp.MustCompile(`^[0-9]{1,20}$`)
)

// checkErrorShape asserts what every normalisation error must look like.
func checkErrorShape(t *testing.T, err error, fields map[string]bool) {
	t.Helper()
	var e *dict.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is %T, want *dict.Error", err, err)
	}
	if e.Kind != dict.KindInvalid || e.Field == "" || e.Msg == "" || len(e.Violations) == 0 {
		t.Fatalf("error %+v, want invalid with a field, a message and violations", e)
	}
	if e.Violations[0] != (dict.FieldViolation{Field: e.Field, Rule: e.Msg}) {
		t.Fatalf("first violation %+v differs from %q: %q", e.Violations[0], e.Field, e.Msg)
	}
	seen := map[string]bool{}
	for _, v := range e.Violations {
		if !fields[v.Field] || v.Rule == "" || seen[v.Field] || len(v.Rule) > 400 {
			t.Fatalf("violation %+v: want one per known field with a short rule", v)
		}
		seen[v.Field] = true
	}
}

func FuzzAccountNormalize(f *testing.F) {
	f.Add("12345678", "0001", "0007654321", uint8(1), int64(1584230400))
	f.Add("12345678", "", "1", uint8(4), int64(1))
	f.Add("1234567X", "00001", "765432-1", uint8(0), int64(0))
	f.Add("", "x", "", uint8(9), int64(-1))
	f.Fuzz(func(t *testing.T, participant, branch, number string, typ uint8, openedUnix int64) {
		in := dict.Account{Participant: participant, Branch: branch, Number: number, Type: dict.AccountType(typ % 6)}
		if openedUnix != 0 {
			in.OpenedAt = time.Unix(openedUnix, 0).UTC()
		}
		got, err := in.Normalize()
		if err != nil {
			checkErrorShape(t, err, map[string]bool{
				"account.participant": true, "account.branch": true, "account.number": true, "account.type": true, "account.opened_at": true,
			})
			return
		}
		if !ispbRE.MatchString(got.Participant) || !branchRE.MatchString(got.Branch) || !numberRE.MatchString(got.Number) ||
			got.Type < dict.AccountTypeCACC || got.Type > dict.AccountTypeTRAN || got.OpenedAt.IsZero() {
			t.Fatalf("Normalize(%+v) = %+v, not canonical", in, got)
		}
		again, err := got.Normalize()
		if err != nil {
			t.Fatalf("Normalize(%+v) error: %v", got, err)
		}
		if diff := cmp.Diff(got, again); diff != "" {
			t.Fatalf("Normalize is not idempotent (-want +got):\n%s", diff)
		}
	})
}

func FuzzOwnerNormalize(f *testing.F) {
	f.Add(uint8(1), "123.456.789-09", " Fulano de Tal ", "")
	f.Add(uint8(2), "12.abc.345/01de-35", "Padaria São João", "Padaria S&J")
	f.Add(uint8(1), "12345678909", "Fulano", "Fulano ME")
	f.Add(uint8(0), "", "", strings.Repeat("b", 101))
	f.Add(uint8(2), "11222333000181", "Jo\xe3o\n", "\t")
	f.Fuzz(func(t *testing.T, typ uint8, taxID, name, tradeName string) {
		in := dict.Owner{Type: dict.OwnerType(typ % 4), TaxID: taxID, Name: name, TradeName: tradeName}
		got, err := in.Normalize()
		if err != nil {
			checkErrorShape(t, err, map[string]bool{"owner.type": true, "owner.tax_id": true, "owner.name": true, "owner.trade_name": true})
			return
		}
		switch got.Type {
		case dict.OwnerTypeNaturalPerson:
			if !dict.ValidCPF(got.TaxID) || got.TradeName != "" {
				t.Fatalf("Normalize(%+v) = %+v: natural person needs a CPF and no trade name", in, got)
			}
		case dict.OwnerTypeLegalPerson:
			if !dict.ValidCNPJ(got.TaxID) {
				t.Fatalf("Normalize(%+v) = %+v: legal person needs a CNPJ", in, got)
			}
		default:
			t.Fatalf("Normalize(%+v) accepted owner type %v", in, got.Type)
		}
		for _, s := range []struct {
			v   string
			max int
		}{{got.Name, 150}, {got.TradeName, 100}} {
			if !utf8.ValidString(s.v) || utf8.RuneCountInString(s.v) > s.max || strings.TrimSpace(s.v) != s.v ||
				strings.IndexFunc(s.v, unicode.IsControl) >= 0 {
				t.Fatalf("Normalize(%+v) = %+v: name %q not canonical", in, got, s.v)
			}
		}
		if got.Name == "" {
			t.Fatalf("Normalize(%+v) = %+v: empty name accepted", in, got)
		}
		again, err := got.Normalize()
		if err != nil {
			t.Fatalf("Normalize(%+v) error: %v", got, err)
		}
		if diff := cmp.Diff(got, again); diff != "" {
			t.Fatalf("Normalize is not idempotent (-want +got):\n%s", diff)
		}
	})
}
