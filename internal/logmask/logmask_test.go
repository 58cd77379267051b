package logmask_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/lbpay-lab/core-dict/internal/logmask"
)

func TestText(t *testing.T) {
	for _, test := range []struct {
		in      string
		secrets []string // must not survive
		keep    []string // must survive
	}{
		{"cpf 12345678909 refused", []string{"12345678909"}, []string{"cpf ", " refused"}},
		{"cnpj=11222333000181;", []string{"11222333000181"}, []string{"cnpj=", ";"}},
		{"alnum cnpj AB222333000181", []string{"AB222333000181"}, nil},
		{"punctuated 123.456.789-09 and 11.222.333/0001-81", []string{"123.456.789-09", "11.222.333/0001-81", "456.789"}, []string{"punctuated "}},
		{"phone +5561912345678 and 5561912345678", []string{"+5561912345678", "5561912345678", "1912345"}, nil},
		{"mail Maria.Silva+pix@example.com.br bounced", []string{"Maria.Silva", "example.com"}, []string{"mail ", " bounced"}},
		{"ispb 12345678 branch 0001 count 42", nil, []string{"12345678", "0001", "42"}},
		{"pg: ERROR: duplicate key (key)=(98765432100) (SQLSTATE 23505)", []string{"98765432100"}, []string{"SQLSTATE 23505"}},
		{"two 12345678909,98765432100", []string{"12345678909", "98765432100"}, nil},
		{"uuid 7f9c1c6e-8a4b-4a2e-9d55-0c2d4a8b9e10 stays", nil, []string{"7f9c1c6e-8a4b-4a2e-9d55-0c2d4a8b9e10"}},
	} {
		got := logmask.Text(test.in)
		for _, s := range test.secrets {
			if strings.Contains(got, s) {
				t.Errorf("Text(%q) = %q still holds %q", test.in, got, s)
			}
		}
		for _, s := range test.keep {
			if !strings.Contains(got, s) {
				t.Errorf("Text(%q) = %q lost %q", test.in, got, s)
			}
		}
	}
	if got := logmask.Text("bad \xff utf8"); !strings.Contains(got, "\uFFFD") || strings.Contains(got, "\xff") {
		t.Errorf("invalid UTF-8 not replaced: %q", got)
	}
}

func TestValue(t *testing.T) {
	for _, in := range []string{"7f9c1c6e-8a4b-4a2e-9d55-0c2d4a8b9e10", "12345678909", "ana@example.com", "x", strings.Repeat("k", 10<<10)} {
		got := logmask.Value(in)
		if len(in) > 2 && strings.Contains(got, in[:len(in)-2]) {
			t.Errorf("Value(%.40q) = %.40q reveals it", in, got)
		}
		if len(got) > 40 {
			t.Errorf("Value of %d bytes is %d bytes long", len(in), len(got))
		}
	}
}

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	l := logmask.Logger(slog.New(slog.NewJSONHandler(&buf, nil)))
	if logmask.Logger(l) != l {
		t.Error("Logger wrapped a masking logger again")
	}
	evp := "7f9c1c6e-8a4b-4a2e-9d55-0c2d4a8b9e10"
	l = l.With("payer_id", "12345678909")
	l.WithGroup("req").Error("create 11222333000181 failed",
		"key", evp,
		"err", errors.New("insert ana@example.com: conflict"),
		"keys", []string{"+5561912345678"},
		"owner", slog.GroupValue(slog.String("tax_id", "abc"), slog.Int("n", 12345678909)),
		"participant", "12345678",
		"claim", evp)
	out := buf.String()
	for _, s := range []string{"12345678909\"", "11222333000181", evp + "\",\"err", "ana@example.com", "+5561912345678", "\"abc\""} {
		if strings.Contains(out, s) {
			t.Errorf("log holds %q: %s", s, out)
		}
	}
	for _, s := range []string{`"participant":"12345678"`, `"claim":"` + evp + `"`, `"n":12345678909`} {
		if !strings.Contains(out, s) {
			t.Errorf("log lost %s: %s", s, out)
		}
	}
}
