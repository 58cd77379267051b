package dictbus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// randomCID is a well-formed CID no entry has.
func randomCID(t *testing.T) (string, [4]int64) {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	cid := hex.EncodeToString(b)
	w, err := dict.CIDWords(cid)
	if err != nil {
		t.Fatal(err)
	}
	return cid, w
}

// syncStatus is p's GetSyncStatus for one key type.
func (p *pspStack) syncStatus(t *testing.T, kt dictv1.KeyType) *dictv1.SyncStatus {
	t.Helper()
	res := mustCall(t, p, p.client.GetSyncStatus, &dictv1.GetSyncStatusRequest{})
	for _, s := range res.GetStatuses() {
		if s.GetKeyType() == kt {
			return s
		}
	}
	t.Fatalf("GetSyncStatus has no %s", kt)
	return nil
}

type syncRow struct {
	Result                           string
	Added, Updated, Removed, Skipped int32
}

// syncChecks lists p's recorded checks of one key type, oldest first.
func syncChecks(t *testing.T, p *pspStack, kt dict.KeyType) []syncRow {
	t.Helper()
	rows, err := p.db.Pool.Query(context.Background(),
		`SELECT result, added, updated, removed, skipped FROM sync_checks WHERE participant = $1 AND key_type = $2 ORDER BY id`,
		p.ispb, kt.String())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []syncRow
	for rows.Next() {
		var r syncRow
		if err := rows.Scan(&r.Result, &r.Added, &r.Updated, &r.Removed, &r.Skipped); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestSyncReconciliation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	a, b := w.a, w.b
	const interval = 6 * time.Hour

	cpf := newCPF()
	owner := person(cpf, "Joana Reconciliada")
	a.register(t, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)
	phones := []string{newPhone(), newPhone(), newPhone()}
	for _, ph := range phones {
		a.register(t, dictv1.KeyType_KEY_TYPE_PHONE, ph, owner)
	}
	b.register(t, dictv1.KeyType_KEY_TYPE_PHONE, newPhone(), person(newCPF(), "Outro Dono"))

	// First pass: every key type of both participants is due and matches.
	for _, p := range []*pspStack{a, b} {
		n, err := p.svc.RunDueSyncChecks(ctx, []string{p.ispb}, interval)
		if err != nil || n != len(dict.KeyTypes) {
			t.Fatalf("%s first sync pass: ran %d, err %v; want %d", p.ispb, n, err, len(dict.KeyTypes))
		}
		for _, kt := range dict.KeyTypes {
			if got := syncChecks(t, p, kt); len(got) != 1 || got[0].Result != dict.SyncMatch {
				t.Fatalf("%s %s checks = %+v, want one MATCH", p.ispb, kt, got)
			}
		}
	}
	st := a.syncStatus(t, dictv1.KeyType_KEY_TYPE_PHONE)
	if st.GetResult() != dictv1.SyncResult_SYNC_RESULT_MATCH || st.GetEntryCount() != 3 || !st.GetLastCheck().AsTime().Equal(w.clock.Now()) {
		t.Fatalf("A PHONE status after the first check = %v", st)
	}
	matched := st.GetVsync()

	// Not due again within the interval, on any instance; once due, several
	// instances running at once take each check once.
	if n, err := a.svc.RunDueSyncChecks(ctx, []string{ispbA}, interval); err != nil || n != 0 {
		t.Fatalf("sync pass within the interval: ran %d, err %v; want 0", n, err)
	}
	w.clock.Add(interval)
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			n, err := a.svc.RunDueSyncChecks(ctx, []string{ispbA}, interval)
			if err != nil {
				t.Errorf("concurrent sync pass: %v", err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != len(dict.KeyTypes) {
		t.Fatalf("three concurrent sync passes ran %d checks, want %d (one per key type)", total, len(dict.KeyTypes))
	}

	// Damage A's entries behind the service's back: one entry changed (name
	// and CID), one removed, one bogus entry added.
	changed, removed := phones[0], phones[1]
	bogus := newPhone()
	cid, cw := randomCID(t)
	if _, err := a.db.Pool.Exec(ctx, `UPDATE entries SET owner_name = 'Nome Adulterado', cid = $2, cid_w0 = $3, cid_w1 = $4, cid_w2 = $5, cid_w3 = $6 WHERE key = $1`,
		changed, cid, cw[0], cw[1], cw[2], cw[3]); err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.Pool.Exec(ctx, `DELETE FROM entries WHERE key = $1`, removed); err != nil {
		t.Fatal(err)
	}
	cid, cw = randomCID(t)
	if _, err := a.db.Pool.Exec(ctx, `INSERT INTO entries (key, key_type, participant, branch, account_number, account_type, account_opened_at,
		owner_type, owner_tax_id, owner_name, owner_trade_name, status, created_at, key_owned_since, updated_at, request_id,
		cid, cid_w0, cid_w1, cid_w2, cid_w3)
		SELECT $2, key_type, participant, branch, account_number, account_type, account_opened_at,
		owner_type, owner_tax_id, 'Intruso', owner_trade_name, status, created_at, key_owned_since, updated_at, gen_random_uuid(),
		$3, $4, $5, $6, $7 FROM entries WHERE key = $1`, phones[2], bogus, cid, cw[0], cw[1], cw[2], cw[3]); err != nil {
		t.Fatal(err)
	}
	if st := a.syncStatus(t, dictv1.KeyType_KEY_TYPE_PHONE); st.GetVsync() == matched || st.GetEntryCount() != 3 {
		t.Fatalf("A PHONE status after the damage = %v, want another VSync over 3 entries", st)
	}

	// The next reconciliation finds the mismatch and repairs it.
	w.clock.Add(interval)
	if n, err := a.svc.RunDueSyncChecks(ctx, []string{ispbA}, interval); err != nil || n != len(dict.KeyTypes) {
		t.Fatalf("sync pass after the damage: ran %d, err %v", n, err)
	}
	checks := syncChecks(t, a, dict.KeyTypePhone)
	want := []syncRow{{Result: dict.SyncMatch}, {Result: dict.SyncMatch},
		{Result: dict.SyncMismatch}, {Result: dict.SyncRepaired, Added: 1, Updated: 1, Removed: 1}}
	if diff := cmp.Diff(want, checks); diff != "" {
		t.Fatalf("A PHONE checks mismatch (-want +got):\n%s", diff)
	}
	for _, kt := range []dict.KeyType{dict.KeyTypeCPF, dict.KeyTypeEmail} {
		if got := syncChecks(t, a, kt); len(got) != 3 || got[2].Result != dict.SyncMatch {
			t.Fatalf("A %s checks = %+v, want three MATCH", kt, got)
		}
	}
	st = a.syncStatus(t, dictv1.KeyType_KEY_TYPE_PHONE)
	if st.GetResult() != dictv1.SyncResult_SYNC_RESULT_REPAIRED || st.GetVsync() != matched || st.GetEntryCount() != 3 ||
		!st.GetLastCheck().AsTime().Equal(w.clock.Now()) {
		t.Fatalf("A PHONE status after the repair = %v, want REPAIRED with VSync %s", st, matched)
	}

	// The entries are the directory's again.
	if e, err := a.key(t, changed); err != nil || e.GetOwner().GetName() != "Joana Reconciliada" || e.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_ACTIVE {
		t.Fatalf("changed entry after the repair: %v, %v", e, err)
	}
	if e, err := a.key(t, removed); err != nil || e.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_ACTIVE {
		t.Fatalf("removed entry after the repair: %v, %v", e, err)
	}
	if _, err := a.key(t, bogus); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("bogus entry after the repair: %v, want NotFound", err)
	}

	// Each repair left an audit row and its key event with the CID change.
	rows, err := a.db.Pool.Query(ctx, `SELECT a.key, a.reason, o.event_type FROM audit_log a
		JOIN outbox o ON o.aggregate_id = a.key AND o.event_type IN ('KeyCreated', 'KeyUpdated', 'KeyDeleted') AND o.created_at = a.at
		WHERE a.action = $1 AND a.actor = 'sync-reconciler' ORDER BY o.event_type`, dict.SyncRepairAction)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var key, reason, ev string
		if err := rows.Scan(&key, &reason, &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s", ev, key, reason))
	}
	rows.Close()
	wantAudit := []string{"KeyCreated " + removed + " RECONCILIATION", "KeyDeleted " + bogus + " RECONCILIATION",
		"KeyUpdated " + changed + " RECONCILIATION"}
	if diff := cmp.Diff(wantAudit, got); diff != "" {
		t.Fatalf("repair audit rows and events mismatch (-want +got):\n%s", diff)
	}

	// A re-check matches; B, never damaged, still matches.
	ck, err := a.svc.CheckSync(ctx, ispbA, dict.KeyTypePhone)
	if err != nil || ck.Result != dict.SyncMatch || ck.LocalVSync != ck.DictVSync || ck.DictEntries != 3 {
		t.Fatalf("re-check after the repair: %+v, %v", ck, err)
	}
	if st := a.syncStatus(t, dictv1.KeyType_KEY_TYPE_PHONE); st.GetResult() != dictv1.SyncResult_SYNC_RESULT_MATCH {
		t.Fatalf("A PHONE status after the re-check = %v, want MATCH", st)
	}
	if ck, err := b.svc.CheckSync(ctx, ispbB, dict.KeyTypePhone); err != nil || ck.Result != dict.SyncMatch || ck.Entries != 1 {
		t.Fatalf("B re-check: %+v, %v", ck, err)
	}
}
