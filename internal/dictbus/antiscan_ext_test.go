package dictbus_test

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// TestAntiScanNaturalPayer: a payer who is a natural person gets 100
// lookups of other participants' keys, then RESOURCE_EXHAUSTED; a key not
// found costs 20, so 5 not-found lookups empty the bucket. core-dict's own
// buckets (A) refuse before anything is sent; a stack without them (C) is
// refused by the simulated DICT's buckets, with the same outcome. The
// clock does not move, so nothing refills.
func TestAntiScanNaturalPayer(t *testing.T) {
	t.Parallel()
	w := newFullWorld(t, fullOpts{withC: true, noAntiScan: map[string]bool{ispbC: true}})
	a, b, c := w.a, w.b, w.c
	key := newCPF()
	b.register(t, dictv1.KeyType_KEY_TYPE_CPF, key, person(key, "Joana Recebedora"))

	exhausted := func(what string, err error) {
		t.Helper()
		wantRefusal(t, what, err, connect.CodeResourceExhausted, dict.ReasonRateLimited)
	}
	lookups := func(p *pspStack, payer string, n int) {
		t.Helper()
		for i := range n {
			if _, err := p.lookup(key, payer); err != nil {
				t.Fatalf("%s: lookup %d of payer's first 100: %v", p.ispb, i+1, err)
			}
		}
	}

	// core-dict's buckets: the 101st lookup never reaches the directory.
	payer := newCPF()
	lookups(a, payer, 100)
	_, err := a.lookup(key, payer)
	exhausted("A: 101st lookup", err)
	if got := w.simCount(t, "get_entry", "ok"); got != 100 {
		t.Fatalf("the directory answered %d lookups, want 100 (the 101st refused by core-dict)", got)
	}
	// Another payer is not affected.
	if _, err := a.lookup(key, newCPF()); err != nil {
		t.Fatalf("A: another payer's lookup: %v", err)
	}

	// Not found costs 20: 5 such lookups empty the bucket; the 6th, even of
	// a key that exists, is refused.
	payer = newCPF()
	for i := range 5 {
		_, err := a.lookup(newCPF(), payer)
		wantRefusal(t, fmt.Sprintf("A: not-found lookup %d", i+1), err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	}
	_, err = a.lookup(key, payer)
	exhausted("A: lookup after 5 not found", err)
	if got := w.simCount(t, "get_entry", dict.ReasonEntryNotFound); got != 5 {
		t.Fatalf("the directory answered %d not-found lookups, want 5", got)
	}
	if got := w.simCount(t, "get_entry", dict.ReasonRateLimited); got != 0 {
		t.Fatalf("the directory refused %d lookups, want none (core-dict refuses first)", got)
	}

	// Without core-dict's buckets, the DICT's own refuse the 101st; the PSP
	// answers RESOURCE_EXHAUSTED all the same.
	okBefore := w.simCount(t, "get_entry", "ok")
	payer = newCPF()
	lookups(c, payer, 100)
	_, err = c.lookup(key, payer)
	exhausted("C (no own buckets): 101st lookup", err)
	if got := w.simCount(t, "get_entry", "ok") - okBefore; got != 100 {
		t.Fatalf("the directory answered %d of C's lookups, want 100", got)
	}
	if got := w.simCount(t, "get_entry", dict.ReasonRateLimited); got != 1 {
		t.Fatalf("the directory refused %d lookups, want 1", got)
	}
	payer = newCPF()
	for i := range 5 {
		_, err := c.lookup(newCPF(), payer)
		wantRefusal(t, fmt.Sprintf("C: not-found lookup %d", i+1), err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	}
	_, err = c.lookup(key, payer)
	exhausted("C (no own buckets): lookup after 5 not found", err)
}
