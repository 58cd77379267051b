package dict

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/sqlc"
)

// Reconciliation with the directory (DOMAIN.md, "Synchronisation"): per
// participant and key type, the service compares its VSync with the DICT's
// at least every [MaxSyncCheckInterval]. On a mismatch it lists the DICT's
// CIDs (with the entries), repairs its own side from them and checks again.

// Sync check intervals (SYNC_CHECK_INTERVAL).
const (
	DefaultSyncCheckInterval = 6 * time.Hour
	// MaxSyncCheckInterval is BCB's limit between two checks of a key type.
	MaxSyncCheckInterval = 36 * time.Hour
)

// Results of a sync check, as stored in sync_checks.
const (
	SyncMatch    = "MATCH"
	SyncMismatch = "MISMATCH"
	SyncRepaired = "REPAIRED"
)

// SyncRepairAction is the audit_log action of a reconciliation's repair.
const SyncRepairAction = "SyncRepair"

// syncSubject is the actor of the reconciliation's repairs in the audit log.
const syncSubject = "sync-reconciler"

// syncLease is how long a claimed check stays taken before another instance
// may take it again (an instance that died mid-check).
const syncLease = 15 * time.Minute

// syncRetry is how soon a check that failed, or still mismatched after its
// repair (a write in flight, skipped), is run again.
const syncRetry = 5 * time.Minute

// SyncCheck is the outcome of one check of a participant's key type.
type SyncCheck struct {
	Participant string
	KeyType     KeyType
	At          time.Time
	// Result is [SyncMatch], [SyncMismatch] or [SyncRepaired].
	Result      string
	LocalVSync  string
	DictVSync   string
	Entries     int64
	DictEntries int64
	// What the repair did (zero when the first comparison matched):
	// entries inserted or overwritten from the directory's copy, entries
	// removed, and differences left alone because a write or claim on the
	// key is in flight (the next check sees them settled).
	Added, Updated, Removed, Skipped int
}

// ClampSyncCheckInterval is interval, or [DefaultSyncCheckInterval] when
// not positive, at most [MaxSyncCheckInterval].
func ClampSyncCheckInterval(interval time.Duration) time.Duration {
	if interval <= 0 {
		return DefaultSyncCheckInterval
	}
	return min(interval, MaxSyncCheckInterval)
}

var errSyncNotWired = E(KindUnimplemented, ReasonNotImplemented, "the directory link does not answer VSync and CID lists")

func (s *Service) syncDirectory() (SyncDirectory, error) {
	d, ok := s.directory.(SyncDirectory)
	if !ok || s.directory == nil {
		return nil, errSyncNotWired
	}
	return d, nil
}

// RunSyncChecks runs [Service.RunDueSyncChecks] until ctx ends, looking for
// due checks every minute (or every interval when shorter); whether a check
// is due is decided on the service's clock. Run it on every instance.
func (s *Service) RunSyncChecks(ctx context.Context, participants []string, interval time.Duration) {
	interval = ClampSyncCheckInterval(interval)
	t := time.NewTicker(min(interval, time.Minute))
	defer t.Stop()
	for {
		if _, err := s.RunDueSyncChecks(ctx, participants, interval); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "sync checks failed; retried soon", "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunDueSyncChecks runs [Service.CheckSync] for every participant and key
// type whose check is due on the service's clock, and reports how many it
// ran. A due check is taken in one statement on sync_schedule, so across
// instances each check runs once per interval; a check that fails or still
// mismatches after its repair is due again after a few minutes, and one
// whose instance died after [syncLease].
func (s *Service) RunDueSyncChecks(ctx context.Context, participants []string, interval time.Duration) (int, error) {
	interval = ClampSyncCheckInterval(interval)
	ran := 0
	var errs []error
	for _, p := range participants {
		for _, t := range KeyTypes {
			now := s.now().UTC()
			var n int64
			err := s.inTx(ctx, "claim sync check", s.workerScope(p), func(q *sqlc.Queries) (err error) {
				n, err = q.ClaimSyncCheck(ctx, sqlc.ClaimSyncCheckParams{Participant: p, KeyType: t.String(),
					NextCheckAt: now.Add(min(interval, syncLease)), Now: now})
				return err
			})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if n == 0 {
				continue
			}
			ran++
			ck, err := s.CheckSync(ctx, p, t)
			next := now.Add(interval)
			if err != nil || ck.Result == SyncMismatch {
				next = now.Add(min(interval, syncRetry))
			}
			if err != nil {
				errs = append(errs, err)
			}
			if err := s.inTx(ctx, "schedule sync check", s.workerScope(p), func(q *sqlc.Queries) error {
				return q.SetSyncCheckDue(ctx, sqlc.SetSyncCheckDueParams{NextCheckAt: next, Participant: p, KeyType: t.String()})
			}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return ran, errors.Join(errs...)
}

// CheckSync compares participant's VSync of key type t with the
// directory's and records the result. On a mismatch it records MISMATCH,
// repairs this side from the directory's CIDs (entries the directory has
// that are missing or different here are written from its copy, entries it
// lacks are removed; each with an audit row and its key event) and records
// the re-check: REPAIRED when the VSyncs then agree, else MISMATCH.
func (s *Service) CheckSync(ctx context.Context, participant string, t KeyType) (SyncCheck, error) {
	dir, err := s.syncDirectory()
	if err != nil {
		return SyncCheck{}, err
	}
	ck, err := s.compareVSync(ctx, dir, participant, t)
	if err != nil {
		return SyncCheck{}, err
	}
	if ck.LocalVSync == ck.DictVSync {
		ck.Result = SyncMatch
		return ck, s.recordSyncCheck(ctx, ck)
	}
	ck.Result = SyncMismatch
	if err := s.recordSyncCheck(ctx, ck); err != nil {
		return ck, err
	}
	s.logger.WarnContext(ctx, "VSync differs from the directory's; reconciling", "participant", participant, "key_type", t.String(),
		"entries", ck.Entries, "dict_entries", ck.DictEntries)

	// Changes recorded after this point may be newer than the list: the
	// repair leaves their keys alone.
	var watermark int64
	err = s.read(ctx, s.workerScope(participant), func(q *sqlc.Queries) (err error) {
		watermark, err = q.AuditWatermark(ctx)
		return err
	})
	if err != nil {
		return ck, dbError("sync check", err)
	}
	list, err := dir.ListCids(ctx, participant, t)
	if err != nil {
		return ck, err
	}
	rep, err := s.repairSync(ctx, participant, t, list, watermark)
	if err != nil {
		return ck, err
	}
	after, err := s.compareVSync(ctx, dir, participant, t)
	if err != nil {
		return ck, err
	}
	after.Added, after.Updated, after.Removed, after.Skipped = rep.Added, rep.Updated, rep.Removed, rep.Skipped
	after.Result = SyncMismatch
	if after.LocalVSync == after.DictVSync {
		after.Result = SyncRepaired
	}
	s.logger.InfoContext(ctx, "reconciled with the directory", "participant", participant, "key_type", t.String(), "result", after.Result,
		"added", rep.Added, "updated", rep.Updated, "removed", rep.Removed, "skipped", rep.Skipped)
	return after, s.recordSyncCheck(ctx, after)
}

func (s *Service) compareVSync(ctx context.Context, dir SyncDirectory, participant string, t KeyType) (SyncCheck, error) {
	var local sqlc.LocalVSyncRow
	err := s.read(ctx, s.workerScope(participant), func(q *sqlc.Queries) (err error) {
		local, err = q.LocalVSync(ctx, sqlc.LocalVSyncParams{Participant: participant, KeyType: t.String()})
		return err
	})
	if err != nil {
		return SyncCheck{}, dbError("sync check", err)
	}
	dv, dn, err := dir.VSync(ctx, participant, t)
	if err != nil {
		return SyncCheck{}, err
	}
	return SyncCheck{
		Participant: participant, KeyType: t, At: s.now().UTC(),
		LocalVSync: WordsToHex([4]int64{local.W0, local.W1, local.W2, local.W3}), DictVSync: dv,
		Entries: local.EntryCount, DictEntries: dn,
	}, nil
}

func (s *Service) recordSyncCheck(ctx context.Context, ck SyncCheck) error {
	return s.inTx(ctx, "record sync check", s.workerScope(ck.Participant), func(q *sqlc.Queries) error {
		return q.InsertSyncCheck(ctx, sqlc.InsertSyncCheckParams{
			Participant: ck.Participant, KeyType: ck.KeyType.String(), CheckedAt: ck.At,
			LocalVsync: ck.LocalVSync, DictVsync: ck.DictVSync, Result: ck.Result,
			Entries: ck.Entries, DictEntries: ck.DictEntries,
			Added: int32(ck.Added), Updated: int32(ck.Updated), Removed: int32(ck.Removed), Skipped: int32(ck.Skipped),
		})
	})
}

// errSyncSkip leaves a difference to the next check: the key changed since
// the directory's list was asked, or a write or claim on it is in flight.
var errSyncSkip = E(KindPrecondition, "SyncRepairSkipped", "the key is changing; left to the next check")

// repairSync makes participant's entries of type t match list, the
// directory's copy, one key per transaction.
func (s *Service) repairSync(ctx context.Context, participant string, t KeyType, list []Entry, watermark int64) (SyncCheck, error) {
	// Reconciliation acts for the participants this instance serves: a key
	// may have moved between two of them.
	scope := s.workerScope(participant)
	var rows []sqlc.Entry
	err := s.read(ctx, scope, func(q *sqlc.Queries) (err error) {
		rows, err = q.SyncLocalEntries(ctx, sqlc.SyncLocalEntriesParams{Participant: participant, KeyType: t.String()})
		return err
	})
	if err != nil {
		return SyncCheck{}, dbError("sync repair", err)
	}
	local := make(map[string]sqlc.Entry, len(rows))
	pendingRequests := map[uuid.UUID]bool{}
	for _, r := range rows {
		local[r.Key] = r
		if r.PendingOp.Valid {
			pendingRequests[r.RequestID] = true
		}
	}
	var rep SyncCheck
	run := uuid.New() // the audit rows of one reconciliation share a request id
	count := func(key string, err error, n *int) {
		switch {
		case err == nil:
			*n++
		case errors.Is(err, errSyncSkip):
			rep.Skipped++
		default:
			rep.Skipped++
			s.logger.WarnContext(ctx, "sync repair of a key failed; left to the next check", "key", MaskForLog(key), "err", err.Error())
		}
	}
	inDirectory := make(map[string]bool, len(list))
	for _, d := range list {
		if d.Account.Participant != participant || d.KeyType != t {
			s.logger.WarnContext(ctx, "directory listed an entry of another participant or key type; ignored", "key", MaskForLog(d.Key))
			rep.Skipped++
			continue
		}
		if _, err := CIDWords(d.CID); err != nil {
			s.logger.WarnContext(ctx, "directory listed an entry without a valid CID; ignored", "key", MaskForLog(d.Key))
			rep.Skipped++
			continue
		}
		inDirectory[d.Key] = true
		r, ok := local[d.Key]
		switch {
		case !ok && pendingRequests[d.RequestID]:
			// An EVP create whose answer is in flight: it is still keyed
			// by its request id here.
			rep.Skipped++
		case !ok || r.Status == EntryStatusFailed.String():
			count(d.Key, s.syncInsert(ctx, scope, run, d, watermark), &rep.Added)
		case r.Cid == d.CID && sameSyncData(entryFromRow(r), d):
		case r.Status != EntryStatusActive.String() || r.PendingOp.Valid:
			rep.Skipped++
		default:
			count(d.Key, s.syncOverwrite(ctx, scope, run, r.Cid, d, watermark), &rep.Updated)
		}
	}
	for _, r := range rows {
		if inDirectory[r.Key] || r.Status == EntryStatusFailed.String() || r.PendingOp.String == PendingCreate {
			continue
		}
		if r.Status != EntryStatusActive.String() || r.PendingOp.Valid {
			rep.Skipped++
			continue
		}
		count(r.Key, s.syncRemove(ctx, scope, run, r.Key, r.Cid, watermark), &rep.Removed)
	}
	return rep, nil
}

// sameSyncData tells whether two copies of an entry agree on what its CID
// covers.
func sameSyncData(a, b Entry) bool {
	return a.Key == b.Key && a.KeyType == b.KeyType && a.Owner.TaxID == b.Owner.TaxID && a.Owner.Name == b.Owner.Name &&
		a.Owner.TradeName == b.Owner.TradeName && a.Owner.Type == b.Owner.Type && a.Account.Participant == b.Account.Participant &&
		a.Account.Branch == b.Account.Branch && a.Account.Number == b.Account.Number && a.Account.Type == b.Account.Type
}

// syncGuard refuses to repair key when it changed after the directory's
// list was asked or is under an open claim.
func syncGuard(ctx context.Context, q *sqlc.Queries, key string, watermark int64) error {
	changed, err := q.KeyChangedSince(ctx, sqlc.KeyChangedSinceParams{Key: key, Watermark: watermark})
	if err != nil {
		return err
	}
	if changed {
		return errSyncSkip
	}
	if err := lockedByClaim(ctx, q, key); err != nil {
		if KindOf(err) == KindPrecondition {
			return errSyncSkip
		}
		return err
	}
	return nil
}

// syncInsert writes the directory's entry d, which this side lacks (or
// holds only as a refused create).
func (s *Service) syncInsert(ctx context.Context, scope []string, run uuid.UUID, d Entry, watermark int64) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	after := d
	after.Status, after.PendingOp, after.FailureReason, after.FailureMessage = EntryStatusActive, "", "", ""
	after.UpdatedAt = now
	if after.CreatedAt.IsZero() {
		after.CreatedAt = now
	}
	if after.KeyOwnedSince.IsZero() {
		after.KeyOwnedSince = after.CreatedAt
	}
	c := Caller{Participant: d.Account.Participant, Subject: syncSubject}
	err := s.inTx(ctx, "sync repair", scope, func(q *sqlc.Queries) error {
		if err := syncGuard(ctx, q, d.Key, watermark); err != nil {
			return err
		}
		var before *Entry
		row, err := q.GetEntryForUpdate(ctx, d.Key)
		switch {
		case err == nil:
			if row.Status != EntryStatusFailed.String() {
				return errSyncSkip
			}
			b := entryFromRow(row)
			before = &b
			if err := q.DeleteEntry(ctx, d.Key); err != nil {
				return err
			}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if err := q.InsertEntry(ctx, insertParams(after)); err != nil {
			return err
		}
		if err := s.record(ctx, q, c, SyncRepairAction, d.Key, run, ReasonReconciliation, before, &after); err != nil {
			return err
		}
		return s.emitEntry(ctx, q, c, after, &dictv1.EventEnvelope{EventType: "KeyCreated",
			Payload: &dictv1.EventEnvelope_KeyCreated{KeyCreated: &dictv1.KeyCreated{
				Entry: after.Proto(), RequestId: run.String(), CidEvents: []*dictv1.CidEvent{cidAdded(after.CID)}}}})
	})
	if err == nil && s.cache != nil {
		s.cache.Invalidate(ctx, d.Key)
	}
	return err
}

// syncOverwrite replaces this side's ACTIVE copy of an entry (whose CID was
// seenCID) with the directory's d.
func (s *Service) syncOverwrite(ctx context.Context, scope []string, run uuid.UUID, seenCID string, d Entry, watermark int64) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	c := Caller{Participant: d.Account.Participant, Subject: syncSubject}
	var after Entry
	err := s.inTx(ctx, "sync repair", scope, func(q *sqlc.Queries) error {
		if err := syncGuard(ctx, q, d.Key, watermark); err != nil {
			return err
		}
		row, err := q.GetEntryForUpdate(ctx, d.Key)
		if errors.Is(err, pgx.ErrNoRows) {
			return errSyncSkip
		}
		if err != nil {
			return err
		}
		if row.Cid != seenCID || row.Status != EntryStatusActive.String() || row.PendingOp.Valid {
			return errSyncSkip
		}
		before := entryFromRow(row)
		after = before
		after.Account, after.Owner, after.RequestID, after.CID = d.Account, d.Owner, d.RequestID, d.CID
		if !d.KeyOwnedSince.IsZero() {
			after.KeyOwnedSince = d.KeyOwnedSince
		}
		after.UpdatedAt, after.FailureReason, after.FailureMessage = now, "", ""
		w, _ := CIDWords(after.CID)
		n, err := q.OverwriteEntry(ctx, sqlc.OverwriteEntryParams{
			Branch: after.Account.Branch, AccountNumber: after.Account.Number, AccountType: after.Account.Type.String(),
			AccountOpenedAt: after.Account.OpenedAt, OwnerType: after.Owner.Type.String(), OwnerTaxID: after.Owner.TaxID,
			OwnerName: after.Owner.Name, OwnerTradeName: after.Owner.TradeName, KeyOwnedSince: after.KeyOwnedSince,
			UpdatedAt: now, RequestID: after.RequestID, Cid: after.CID, CidW0: w[0], CidW1: w[1], CidW2: w[2], CidW3: w[3],
			Key: d.Key,
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return errSyncSkip
		}
		if err := s.record(ctx, q, c, SyncRepairAction, d.Key, run, ReasonReconciliation, &before, &after); err != nil {
			return err
		}
		return s.emitEntry(ctx, q, c, after, &dictv1.EventEnvelope{EventType: "KeyUpdated",
			Payload: &dictv1.EventEnvelope_KeyUpdated{KeyUpdated: &dictv1.KeyUpdated{
				Entry: after.Proto(), RequestId: run.String(), Reason: dictv1.Reason(ReasonReconciliation),
				CidEvents: []*dictv1.CidEvent{cidRemoved(before.CID), cidAdded(after.CID)}}}})
	})
	if err == nil && s.cache != nil {
		s.cache.Invalidate(ctx, d.Key)
	}
	return err
}

// syncRemove deletes this side's ACTIVE entry key (whose CID was seenCID),
// which the directory does not hold.
func (s *Service) syncRemove(ctx context.Context, scope []string, run uuid.UUID, key, seenCID string, watermark int64) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	err := s.inTx(ctx, "sync repair", scope, func(q *sqlc.Queries) error {
		if err := syncGuard(ctx, q, key, watermark); err != nil {
			return err
		}
		row, err := q.GetEntryForUpdate(ctx, key)
		if errors.Is(err, pgx.ErrNoRows) {
			return errSyncSkip
		}
		if err != nil {
			return err
		}
		if row.Cid != seenCID || row.Status != EntryStatusActive.String() || row.PendingOp.Valid {
			return errSyncSkip
		}
		before := entryFromRow(row)
		c := Caller{Participant: before.Account.Participant, Subject: syncSubject}
		if err := q.DeleteEntry(ctx, key); err != nil {
			return err
		}
		after := before
		after.Status, after.UpdatedAt = EntryStatusDeleted, now
		if err := s.record(ctx, q, c, SyncRepairAction, key, run, ReasonReconciliation, &before, &after); err != nil {
			return err
		}
		return s.emitEntry(ctx, q, c, after, &dictv1.EventEnvelope{EventType: "KeyDeleted",
			Payload: &dictv1.EventEnvelope_KeyDeleted{KeyDeleted: &dictv1.KeyDeleted{
				Entry: after.Proto(), RequestId: run.String(), Reason: dictv1.Reason(ReasonReconciliation),
				CidEvents: []*dictv1.CidEvent{cidRemoved(before.CID)}}}})
	})
	if err == nil && s.cache != nil {
		s.cache.Invalidate(ctx, key)
	}
	return err
}
