package dict_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/lbpay-lab/core-dict/dict"
)

var (
	cidRequestID = uuid.MustParse("6f1c2b9e-3f4a-4d6b-9c8e-1a2b3c4d5e6f")

	cpfEntry = dict.Entry{
		KeyType: dict.KeyTypeCPF,
		Key:     "12345678909",
		Account: dict.Account{Participant: "12345678", Branch: "0001", Number: "0007654321", Type: dict.AccountTypeCACC, OpenedAt: opened},
		Owner:   dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Fulano de Tal"},
	}
	cnpjEntry = dict.Entry{
		KeyType: dict.KeyTypeCNPJ,
		Key:     "12ABC34501DE35",
		Account: dict.Account{Participant: "99999999", Number: "12345", Type: dict.AccountTypeTRAN, OpenedAt: opened},
		Owner:   dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: "12ABC34501DE35", Name: "Padaria São João & Filhos Ltda", TradeName: "Padaria S&J"},
	}
)

// plainCID is the CID as DOMAIN.md words it, written out by hand.
func plainCID(requestID uuid.UUID, e dict.Entry) string {
	msg := strings.Join([]string{
		e.KeyType.String(), e.Key, e.Owner.TaxID, e.Owner.Name, e.Owner.TradeName,
		e.Account.Participant, e.Account.Branch, e.Account.Number, e.Account.Type.String(),
	}, "&")
	mac := hmac.New(sha256.New, requestID[:])
	mac.Write([]byte(msg))
	return hex.EncodeToString(mac.Sum(nil))
}

func TestCID(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name  string
		entry dict.Entry
		// Computed outside Go (Python's hmac) over the same message.
		want string
	}{
		{name: "cpf", entry: cpfEntry, want: "51eaca88f11d3de7c67c55eddffb1bc1d3d3718c48127e025f3bfbe1a94e7f8d"},
		{name: "cnpj, no branch, '&' in names", entry: cnpjEntry, want: "43335dfcf81818caca84d817fd206dbc73a06ba1469636c77c53920163a019e4"},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got := dict.CID(cidRequestID, test.entry)
			if diff := cmp.Diff(test.want, got); diff != "" {
				t.Errorf("CID mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(plainCID(cidRequestID, test.entry), got); diff != "" {
				t.Errorf("CID differs from the plain computation (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCIDInputs(t *testing.T) {
	t.Parallel()
	base := dict.CID(cidRequestID, cpfEntry)
	for _, test := range []struct {
		name    string
		edit    func(*dict.Entry)
		changes bool
	}{
		{name: "opening date", edit: func(e *dict.Entry) { e.Account.OpenedAt = opened.AddDate(1, 0, 0) }},
		{name: "status and times", edit: func(e *dict.Entry) {
			e.Status, e.CreatedAt, e.UpdatedAt, e.KeyOwnedSince = dict.EntryStatusActive, time.Now(), time.Now(), time.Now()
		}},
		{name: "stored cid and request id", edit: func(e *dict.Entry) { e.CID, e.RequestID = "x", uuid.New() }},
		{name: "owner type", edit: func(e *dict.Entry) { e.Owner.Type = dict.OwnerTypeLegalPerson }},
		{name: "key type", edit: func(e *dict.Entry) { e.KeyType = dict.KeyTypePhone }, changes: true},
		{name: "key", edit: func(e *dict.Entry) { e.Key = "52998224725" }, changes: true},
		{name: "tax id", edit: func(e *dict.Entry) { e.Owner.TaxID = "52998224725" }, changes: true},
		{name: "name", edit: func(e *dict.Entry) { e.Owner.Name = "Fulano" }, changes: true},
		{name: "trade name", edit: func(e *dict.Entry) { e.Owner.TradeName = "F" }, changes: true},
		{name: "participant", edit: func(e *dict.Entry) { e.Account.Participant = "87654321" }, changes: true},
		{name: "branch", edit: func(e *dict.Entry) { e.Account.Branch = "" }, changes: true},
		{name: "number", edit: func(e *dict.Entry) { e.Account.Number = "1" }, changes: true},
		{name: "account type", edit: func(e *dict.Entry) { e.Account.Type = dict.AccountTypeSVGS }, changes: true},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			e := cpfEntry
			test.edit(&e)
			if got := dict.CID(cidRequestID, e); (got != base) != test.changes {
				t.Errorf("CID after changing %s = %s, base %s; want changed %v", test.name, got, base, test.changes)
			}
		})
	}
	if dict.CID(uuid.MustParse("6f1c2b9e-3f4a-4d6b-9c8e-1a2b3c4d5e70"), cpfEntry) == base {
		t.Error("CID does not depend on the request id")
	}
}

func TestCIDAbsentEnums(t *testing.T) {
	t.Parallel()
	// Absent values are empty strings, not "UNSPECIFIED".
	e := dict.Entry{Key: "k"}
	mac := hmac.New(sha256.New, cidRequestID[:])
	mac.Write([]byte("&k&&&&&&&"))
	if diff := cmp.Diff(hex.EncodeToString(mac.Sum(nil)), dict.CID(cidRequestID, e)); diff != "" {
		t.Errorf("CID mismatch (-want +got):\n%s", diff)
	}
}

// randomCIDs returns n random CIDs from a seeded source.
func randomCIDs(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, seed))
	cids := make([]string, n)
	for i := range cids {
		var b [32]byte
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		cids[i] = hex.EncodeToString(b[:])
	}
	return cids
}

func xorHex(a, b string) string {
	x, _ := hex.DecodeString(a)
	y, _ := hex.DecodeString(b)
	for i := range x {
		x[i] ^= y[i]
	}
	return hex.EncodeToString(x)
}

func TestVSync(t *testing.T) {
	t.Parallel()
	zero := strings.Repeat("0", 64)
	a := dict.CID(cidRequestID, cpfEntry)
	b := dict.CID(cidRequestID, cnpjEntry)
	cids := randomCIDs(1, 50)
	for _, test := range []struct {
		name string
		cids []string
		want string
	}{
		{name: "none", cids: nil, want: zero},
		{name: "empty", cids: []string{}, want: zero},
		{name: "one", cids: []string{a}, want: a},
		{name: "two", cids: []string{a, b}, want: xorHex(a, b)},
		{name: "two reversed", cids: []string{b, a}, want: xorHex(a, b)},
		{name: "same twice cancels", cids: []string{a, b, a}, want: b},
		{name: "added then removed", cids: append(append([]string{}, cids...), cids...), want: zero},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(test.want, dict.VSync(test.cids)); diff != "" {
				t.Errorf("VSync mismatch (-want +got):\n%s", diff)
			}
		})
	}

	// Order does not matter, and an update (REMOVED then ADDED) is an XOR of
	// the old and the new CID into the running VSync.
	want := dict.VSync(cids)
	r := rand.New(rand.NewPCG(2, 2))
	for range 20 {
		shuffled := append([]string{}, cids...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := dict.VSync(shuffled); got != want {
			t.Fatalf("VSync of shuffled CIDs = %s, want %s", got, want)
		}
	}
	updated := append([]string{}, cids...)
	updated[7] = a
	if diff := cmp.Diff(dict.VSync(updated), dict.VSync([]string{want, cids[7], a})); diff != "" {
		t.Errorf("incremental update mismatch (-want +got):\n%s", diff)
	}
}

func TestVSyncPanicsOnMalformedCID(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "abc", strings.Repeat("A", 64), strings.Repeat("g", 64), strings.Repeat("0", 65)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("VSync([%q]) did not panic", bad)
				}
			}()
			dict.VSync([]string{strings.Repeat("0", 64), bad})
		}()
	}
}

func TestCIDWords(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		cid  string
		want [4]int64
	}{
		{strings.Repeat("0", 64), [4]int64{}},
		{strings.Repeat("f", 64), [4]int64{-1, -1, -1, -1}},
		{"8000000000000000" + "7fffffffffffffff" + "0000000000000001" + "fffffffffffffffe",
			[4]int64{math.MinInt64, math.MaxInt64, 1, -2}},
		{"0123456789abcdef" + "fedcba9876543210" + "00000000ffffffff" + "ffffffff00000000",
			[4]int64{0x0123456789abcdef, -0x0123456789abcdf0, 0xffffffff, -0x100000000}},
	} {
		got, err := dict.CIDWords(test.cid)
		if err != nil {
			t.Fatalf("CIDWords(%q) error: %v", test.cid, err)
		}
		if diff := cmp.Diff(test.want, got); diff != "" {
			t.Errorf("CIDWords(%q) mismatch (-want +got):\n%s", test.cid, diff)
		}
		if diff := cmp.Diff(test.cid, dict.WordsToHex(got)); diff != "" {
			t.Errorf("WordsToHex mismatch (-want +got):\n%s", diff)
		}
	}

	for _, bad := range []string{"", strings.Repeat("0", 63), strings.Repeat("0", 65), strings.Repeat("F", 64), strings.Repeat("0", 63) + "x"} {
		_, err := dict.CIDWords(bad)
		if err == nil {
			t.Errorf("CIDWords(%q) succeeded, want an error", bad)
			continue
		}
		checkInvalid(t, err, "cid")
	}
}

func TestCIDWordsXOR(t *testing.T) {
	t.Parallel()
	// The database's bit_xor over the four word columns must give the words of
	// the VSync: XOR of words equals words of XOR, for any set of CIDs.
	for n := range 40 {
		cids := randomCIDs(uint64(n), n)
		var acc [4]int64
		for _, c := range cids {
			w, err := dict.CIDWords(c)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c, dict.WordsToHex(w)); diff != "" {
				t.Fatalf("round trip mismatch (-want +got):\n%s", diff)
			}
			for i := range acc {
				acc[i] ^= w[i]
			}
		}
		vsync := dict.VSync(cids)
		want, err := dict.CIDWords(vsync)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, acc); diff != "" {
			t.Errorf("%d CIDs: XOR of words mismatch (-want +got):\n%s", n, diff)
		}
		if diff := cmp.Diff(vsync, dict.WordsToHex(acc)); diff != "" {
			t.Errorf("%d CIDs: VSync from words mismatch (-want +got):\n%s", n, diff)
		}
	}
}

func ExampleCID() {
	requestID := uuid.MustParse("6f1c2b9e-3f4a-4d6b-9c8e-1a2b3c4d5e6f")
	entry := dict.Entry{
		KeyType: dict.KeyTypeCPF,
		Key:     "12345678909",
		Account: dict.Account{Participant: "12345678", Branch: "0001", Number: "0007654321", Type: dict.AccountTypeCACC},
		Owner:   dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: "12345678909", Name: "Fulano de Tal"},
	}
	cid := dict.CID(requestID, entry)
	fmt.Println(cid)
	fmt.Println(dict.VSync([]string{cid}) == cid)
	fmt.Println(dict.VSync(nil))
	words, _ := dict.CIDWords(cid)
	fmt.Println(words)
	// Output:
	// 51eaca88f11d3de7c67c55eddffb1bc1d3d3718c48127e025f3bfbe1a94e7f8d
	// true
	// 0000000000000000000000000000000000000000000000000000000000000000
	// [5902752951132044775 -4144343076934313023 -3183075664302277118 6862355403855789965]
}
