package dictbus_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
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

// TestAntiScanParticipantChargedWhenSent: the participant's bucket mirrors
// the DICT's, which counts the lookups it receives: A's lookups of its own
// keys and answers from its directory cache cost the payer's bucket but not
// the participant's; each lookup sent costs the participant 1 (found) or 3
// (not found). A payment credits the participant only for a lookup that
// was charged to it. The clock does not move, so nothing refills; A is of
// category H (50 tokens, 2 a minute), because a bucket's Redis key expires
// on the real clock once it would be full again, which for category A is
// 2.4 ms a token.
func TestAntiScanParticipantChargedWhenSent(t *testing.T) {
	t.Parallel()
	w := newFullWorld(t, fullOpts{category: "H"})
	a, b := w.a, w.b
	own := newCPF()
	a.register(t, dictv1.KeyType_KEY_TYPE_CPF, own, person(own, "Dono Proprio"))
	legal := newCNPJ()
	b.register(t, dictv1.KeyType_KEY_TYPE_CNPJ, legal, company(legal, "Empresa Recebedora"))

	tb, err := cachelayer.NewTokenBucket(w.redis, cachelayer.WithLimitKeyPrefix("limit:tb:"+w.prefix+ispbA+":"),
		cachelayer.WithLimitClock(w.now), cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	balance := func(bucket string, p dict.BucketParams) float64 {
		t.Helper()
		d, err := tb.Check(context.Background(), bucket,
			cachelayer.BucketParams{Capacity: p.Capacity, RefillTokens: p.RefillTokens, RefillPeriod: p.RefillPeriod}, 1)
		if err != nil {
			t.Fatal(err)
		}
		return d.Balance
	}
	participant := func() float64 {
		return balance("dict:bucket:participant:{"+ispbA+"}", dict.ParticipantBuckets["H"])
	}
	payer := newCPF()
	payerBalance := func() float64 { return balance("dict:bucket:payer:{"+payer+"}", dict.UserBucketNatural) }
	lookup := func(key string) (string, error) {
		t.Helper()
		e2e := endToEndID(ispbA)
		_, err := a.client.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: key, PayerId: payer, EndToEndId: e2e})
		return e2e, err
	}
	check := func(what string, wantPayer, wantParticipant float64, wantSent int) {
		t.Helper()
		if got := payerBalance(); got != wantPayer {
			t.Errorf("%s: payer's bucket = %v, want %v", what, got, wantPayer)
		}
		if got := participant(); got != wantParticipant {
			t.Errorf("%s: participant's bucket = %v, want %v", what, got, wantParticipant)
		}
		if got := w.simCount(t, "get_entry", "ok") + w.simCount(t, "get_entry", dict.ReasonEntryNotFound); got != wantSent {
			t.Errorf("%s: the directory answered %d lookups, want %d", what, got, wantSent)
		}
	}
	credit := func(e2e string) {
		t.Helper()
		res, err := a.client.CreditPayment(context.Background(), &dictv1.CreditPaymentRequest{PayerId: payer, EndToEndId: e2e})
		if err != nil || !res.GetCredited() {
			t.Fatalf("CreditPayment(%s) = %v, %v; want credited", e2e, res, err)
		}
	}
	full := dict.ParticipantBuckets["H"].Capacity

	var ownE2E string
	for range 3 {
		if ownE2E, err = lookup(own); err != nil {
			t.Fatalf("own key: %v", err)
		}
	}
	check("3 own-key lookups", 97, full, 0)
	sentE2E, err := lookup(legal)
	if err != nil {
		t.Fatalf("legal person's key: %v", err)
	}
	check("+ a legal person's key, sent", 96, full-1, 1)
	cachedE2E, err := lookup(legal)
	if err != nil {
		t.Fatalf("legal person's key, again: %v", err)
	}
	check("+ the same key, from the cache", 95, full-1, 1)
	_, err = lookup(newCPF())
	wantRefusal(t, "a key nobody holds", err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	check("+ a key not found, sent", 75, full-4, 2)

	credit(ownE2E)
	check("+ the payment after an own-key lookup", 76, full-4, 2)
	credit(cachedE2E)
	check("+ the payment after a cached answer", 77, full-4, 2)
	credit(sentE2E)
	check("+ the payment after a lookup sent", 78, full-3, 2)
}
