// Package logmask keeps Pix keys and tax ids out of logs. [NewHandler] wraps
// any slog.Handler so that every record's message and string attributes pass
// through [Text], which masks what looks like a CPF, a CNPJ, a phone number
// or an e-mail address wherever it appears (an error string, a panic value),
// and attributes named for a key or a tax id ("key", "tax_id", "payer_id",
// ...) through [Value] whatever they hold, EVPs included.
//
// It is the safety net under explicit masking at the call sites (dict's
// MaskForLog): a value that reaches a log through an error message or a
// panic is masked too.
package logmask

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"unicode/utf8"
)

// maxMaskStars bounds the asterisks one masked value becomes, so a 10 KB
// hostile key does not become a 10 KB log line.
const maxMaskStars = 12

// maxValueBytes bounds any one string attribute after masking (a stack
// trace fits).
const maxValueBytes = 16 << 10

// sensitiveKeys are attribute names whose whole value is a key or a tax id.
var sensitiveKeys = map[string]bool{
	"key": true, "keys": true, "pix_key": true, "evp": true,
	"tax_id": true, "taxid": true, "tax_id_masked": false, "owner_tax_id": true, "payer_id": true,
	"cpf": true, "cnpj": true, "document": true, "phone": true, "email": true,
}

// IsSensitive reports whether an attribute named name holds a key or a tax
// id as a whole (compared case-insensitively).
func IsSensitive(name string) bool { return sensitiveKeys[strings.ToLower(name)] }

var (
	emailRE = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+`)
	phoneRE = regexp.MustCompile(`\+[1-9][0-9]{7,14}`)
	// Punctuated CPF (000.000.000-00) and CNPJ (00.000.000/0000-00, root
	// possibly alphanumeric).
	punctRE = regexp.MustCompile(`[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}|[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-[0-9]{2}`)
)

// Text masks, in free text, e-mail addresses, phone numbers (+ and 8 to 15
// digits), punctuated CPFs and CNPJs, and every standalone run of letters
// and digits that is 11 to 14 digits (a CPF, a CNPJ, a phone number without
// its +) or a CNPJ (12 characters of [0-9A-Z] and 2 digits). Shorter numbers
// (ISPBs, branches, counts) are left alone. Invalid UTF-8 is replaced.
func Text(s string) string {
	if s == "" {
		return s
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	// The regular expressions only when their anchor is there: most log
	// values (procedures, codes, ids) hold none.
	if strings.IndexByte(s, '@') >= 0 {
		s = emailRE.ReplaceAllStringFunc(s, maskEmail)
	}
	if strings.IndexByte(s, '+') >= 0 {
		s = phoneRE.ReplaceAllStringFunc(s, func(m string) string { return "+" + maskTail(m[1:]) })
	}
	if strings.IndexByte(s, '-') >= 0 {
		s = punctRE.ReplaceAllStringFunc(s, maskTail)
	}
	return maskRuns(s)
}

// maskRuns masks the standalone alphanumeric runs that are tax ids or bare
// phone numbers.
func maskRuns(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if !isAlnum(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isAlnum(s[j]) {
			j++
		}
		if run := s[i:j]; looksLikeTaxID(run) {
			if b.Len() == 0 {
				b.Grow(len(s))
			}
			b.WriteString(s[last:i])
			b.WriteString(maskTail(run))
			last = j
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

func looksLikeTaxID(run string) bool {
	digits := 0
	for i := range len(run) {
		if run[i] >= '0' && run[i] <= '9' {
			digits++
		}
	}
	if digits == len(run) {
		return len(run) >= 11 && len(run) <= 14
	}
	if len(run) != 14 || run[12] < '0' || run[12] > '9' || run[13] < '0' || run[13] > '9' {
		return false
	}
	for i := range 12 {
		if c := run[i]; !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// maskTail keeps the last two characters of s and stars the rest.
func maskTail(s string) string {
	n := utf8.RuneCountInString(s)
	if n <= 4 {
		return strings.Repeat("*", n)
	}
	_, tail := cutRunes(s, n-2)
	return stars(n-2) + tail
}

func maskEmail(s string) string {
	first, _ := utf8.DecodeRuneInString(s)
	return string(first) + "***@***"
}

func stars(n int) string { return strings.Repeat("*", min(n, maxMaskStars)) }

func cutRunes(s string, n int) (string, string) {
	i := 0
	for k := range s {
		if i == n {
			return s[:k], s[k:]
		}
		i++
	}
	return s, ""
}

// Value masks a value known to be a key or a tax id, whatever its shape: an
// e-mail keeps its first character, anything else its last two (at most an
// eighth of it), never more.
func Value(s string) string {
	if s == "" {
		return s
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if onlyMasked(s) {
		return s // already masked (dict.MaskForLog)
	}
	if strings.IndexByte(s, '@') > 0 {
		return maskEmail(s)
	}
	n := utf8.RuneCountInString(s)
	keep := min(2, n/8)
	_, tail := cutRunes(s, n-keep)
	return stars(n-keep) + tail
}

// onlyMasked reports whether s already hides most of itself: at least half
// of it is asterisks.
func onlyMasked(s string) bool {
	return strings.Count(s, "*")*2 >= utf8.RuneCountInString(s)
}

// NewHandler returns h with masking in front of it. Wrapping twice is
// harmless: a handler that already masks is returned as is.
func NewHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(*handler); ok {
		return h
	}
	return &handler{next: h}
}

// Logger returns l logging through [NewHandler]; nil gives slog.Default()'s.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	if _, ok := l.Handler().(*handler); ok {
		return l
	}
	return slog.New(NewHandler(l.Handler()))
}

type handler struct{ next slog.Handler }

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Text(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(Attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		masked[i] = Attr(a)
	}
	return &handler{next: h.next.WithAttrs(masked)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name)}
}

// Attr masks one attribute: its value through [Value] when its name says it
// is a key or a tax id, through [Text] otherwise; groups recursively. Values
// of other kinds than strings, errors, Stringers and string slices (numbers,
// times, durations) are kept.
func Attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	mask := Text
	if IsSensitive(a.Key) {
		mask = Value
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, bound(mask(v.String())))
	case slog.KindGroup:
		group := v.Group()
		out := make([]slog.Attr, len(group))
		for i, g := range group {
			out[i] = Attr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case nil:
			return slog.Attr{Key: a.Key, Value: v}
		case error:
			return slog.String(a.Key, bound(mask(x.Error())))
		case []string:
			out := make([]string, len(x))
			for i, s := range x {
				out[i] = bound(mask(s))
			}
			return slog.Any(a.Key, out)
		case fmt.Stringer:
			return slog.String(a.Key, bound(mask(x.String())))
		case []byte:
			return slog.String(a.Key, bound(mask(string(x))))
		default:
			return slog.String(a.Key, bound(mask(fmt.Sprint(x))))
		}
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}

func bound(s string) string {
	if len(s) <= maxValueBytes {
		return s
	}
	cut := maxValueBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(truncated)"
}
