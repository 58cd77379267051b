package dict

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/sqlc"
)

// Caller is who asks: the participant a request acts for (from the token's
// ispb claim) and the user or service behind it (its sub claim). Every use
// case is scoped to Caller.Participant.
type Caller struct {
	Participant string
	Subject     string
}

// ServiceConfig configures a [Service].
type ServiceConfig struct {
	// Pool is the PostgreSQL pool; required. It connects as the service's
	// role, which row-level security applies to (schema/00010_rls.sql):
	// each transaction sees only its participant set's rows.
	Pool *pgxpool.Pool
	// Participants are the ISPBs this instance serves (DICT_PARTICIPANTS):
	// the participant set of the work that spans them (claim deadlines,
	// the directory's responses and notices, re-sends, reconciliation).
	// Requests act for their caller's participant only. Empty: that work
	// sees no rows.
	Participants []string
	// KeyEventsTopic is the topic key events are written for in the outbox.
	KeyEventsTopic string
	// ClaimEventsTopic is the topic claim events are written for in the
	// outbox (PULSAR_TOPIC_CLAIM_EVENTS).
	ClaimEventsTopic string
	// ParticipantNames maps an ISPB to the name shown to payers.
	ParticipantNames map[string]string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives use-case logs; slog.Default when nil.
	Logger *slog.Logger
	// Cache caches the PSP's own entries; nil reads and writes PostgreSQL only.
	Cache EntryCache
	// AntiScan charges lookups to the DICT's anti-scanning buckets; nil
	// turns the policy off (only tests of other concerns do that).
	AntiScan *AntiScan
	// LookupCounter counts lookups per key (write-behind); may be nil.
	LookupCounter LookupCounter
	// Lookups remembers each lookup's end-to-end id for the payment credit;
	// nil disables CreditPayment.
	Lookups LookupLedger
	// Directory answers lookups of keys this PSP does not hold; nil (until
	// the RSFN connection exists) answers them UNIMPLEMENTED.
	Directory Directory
	// DirectoryCache caches the directory's answers (cache-aside, one
	// loader per key across instances); nil asks the directory every time.
	DirectoryCache DirectoryCache
	// DirectoryCacheTTL is how long an answer is cached: at most (and by
	// default) [MaxDirectoryCacheTTL].
	DirectoryCacheTTL time.Duration
	// DirectoryRequestTopic is the topic the outbox sends DirectoryRequests
	// of writes to (PULSAR_TOPIC_DICT_REQ_OUT).
	DirectoryRequestTopic string
	// DirectoryReplyTo is the topic the directory answers writes on
	// (PULSAR_TOPIC_DICT_RES_IN), where [Service.ApplyDirectoryResponse]'s
	// consumer reads.
	DirectoryReplyTo string
	// ResponseOnce applies each directory response once, by correlation id,
	// in the transaction of its changes (eventbus's PGOnce.ApplyTx); nil
	// runs a plain transaction (the pending write's correlation still makes
	// a second application a no-op).
	ResponseOnce TxOnce
	// TraceParent returns the W3C traceparent of the request in ctx ("" when
	// none); it is stored with each outbox row so that one trace runs from
	// the RPC through the relay to the consumer.
	TraceParent func(ctx context.Context) string
}

// DirectoryCache is a cache-aside store with stampede protection: for a
// key, one caller across instances runs load at a time, the others wait
// for its result; the result is cached for ttl only when load says so.
type DirectoryCache interface {
	GetOrLoad(ctx context.Context, key string, ttl time.Duration, load func(context.Context) (Entry, bool, error)) (Entry, error)
	// Get is the cached answer alone, without loading (ok false on a miss).
	Get(ctx context.Context, key string, ttl time.Duration) (e Entry, ok bool)
}

// MaxDirectoryCacheTTL is BCB's limit on caching a lookup answer from the
// DICT, which may be cached only for keys of legal persons (DOMAIN.md).
const MaxDirectoryCacheTTL = 180 * time.Second

// EntryCache caches this PSP's own entries: read-through on reads,
// write-through on updates, write-around on creates and deletes. The
// implementation guarantees that, once Put or Invalidate returns, this
// instance never serves the older value again.
type EntryCache interface {
	// Get returns the cached entry of key, or load's result (cached) on a
	// miss; found is false when the key has no entry that participant (the
	// caller, whose rows load can see) may read. An absence is cached too,
	// for that participant only, so that looking up other participants'
	// keys does not read the database each time; every change of an entry
	// (Put, Invalidate) drops it like any cached value. When the cache
	// fails it returns load's result.
	Get(ctx context.Context, key, participant string, load func(context.Context) (Entry, bool, error)) (e Entry, found bool, err error)
	// Put stores e after the database committed it; version orders writes
	// so an older value never replaces a newer one.
	Put(ctx context.Context, key string, e Entry, version int64)
	// Invalidate drops key after the database committed its change.
	Invalidate(ctx context.Context, key string)
}

// LookupCounter counts lookups per key for the anti-fraud statistics.
type LookupCounter interface {
	Incr(ctx context.Context, key string, n int64)
}

// LookupLedger remembers lookups by end-to-end id until their payment.
type LookupLedger interface {
	Put(ctx context.Context, endToEndID, value string) error
	Take(ctx context.Context, endToEndID string) (string, bool, error)
}

// Service holds the use cases of core-dict. Each use case that changes state
// is one PostgreSQL transaction holding the change, its audit row and its
// outbox event.
type Service struct {
	requestTopic   string
	replyTo        string
	responseOnce   TxOnce
	traceParent    func(context.Context) string
	directory      Directory
	directoryCache DirectoryCache
	directoryTTL   time.Duration
	cache          EntryCache
	antiScan       *AntiScan
	counter        LookupCounter
	lookups        LookupLedger
	pool           *pgxpool.Pool
	q              *sqlc.Queries
	participants   []string
	topic          string
	claimTopic     string
	names          map[string]string
	now            func() time.Time
	logger         *slog.Logger
}

// NewService returns a [Service] over cfg.Pool.
func NewService(cfg ServiceConfig) *Service {
	s := &Service{
		pool:         cfg.Pool,
		q:            sqlc.New(cfg.Pool),
		participants: append([]string(nil), cfg.Participants...),
		topic:        cfg.KeyEventsTopic,
		claimTopic:   cfg.ClaimEventsTopic,
		names:        cfg.ParticipantNames,
		now:          cfg.Now,
		logger:       cfg.Logger,

		cache:    cfg.Cache,
		antiScan: cfg.AntiScan,
		counter:  cfg.LookupCounter,
		lookups:  cfg.Lookups,

		traceParent:    cfg.TraceParent,
		requestTopic:   cfg.DirectoryRequestTopic,
		replyTo:        cfg.DirectoryReplyTo,
		responseOnce:   cfg.ResponseOnce,
		directory:      cfg.Directory,
		directoryCache: cfg.DirectoryCache,
		directoryTTL:   cfg.DirectoryCacheTTL,
	}
	if s.directoryTTL <= 0 || s.directoryTTL > MaxDirectoryCacheTTL {
		s.directoryTTL = MaxDirectoryCacheTTL
	}
	if s.topic == "" {
		s.topic = "persistent://dict/events/key-events"
	}
	if s.requestTopic == "" {
		s.requestTopic = "persistent://lb-conn/dict/rsfn-dict-req-out"
	}
	if s.replyTo == "" {
		s.replyTo = "persistent://lb-conn/dict/rsfn-dict-res-in"
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s
}

// Size bounds of list requests.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
	MaxCheckKeys    = 200
)

// CreateKeyInput is a request to register a key.
type CreateKeyInput struct {
	RequestID string
	KeyType   KeyType
	Key       string // empty for EVP
	Account   Account
	Owner     Owner
}

// CreateKey registers a key for an account of the caller's participant: it
// stores the entry as PENDING with a DirectoryRequest in the outbox, in one
// transaction, and answers with the PENDING entry. The directory's response
// makes it ACTIVE or FAILED ([Service.ApplyDirectoryResponse]). A pending
// EVP's key is its request id until the directory generates the key.
func (s *Service) CreateKey(ctx context.Context, c Caller, in CreateKeyInput) (Entry, error) {
	reqID, err := parseRequestID(in.RequestID)
	if err != nil {
		return Entry{}, err
	}
	if in.Account.Participant == "" {
		in.Account.Participant = c.Participant
	}
	e, err := validateCreate(in)
	if err != nil {
		return Entry{}, err
	}
	if e.Account.Participant != c.Participant {
		return Entry{}, &Error{Kind: KindPermissionDenied, Reason: ReasonForbidden, Field: "account.participant",
			Msg: "account.participant must be the participant the caller acts for"}
	}
	// The fingerprint is taken before an EVP is generated, so a retry of an
	// EVP create (which carries no key) matches its first attempt.
	fp := fingerprint("CreateKey", c.Participant, e)
	dirKey := e.Key
	if e.KeyType == KeyTypeEVP {
		e.Key = reqID.String() // placeholder until the directory generates the key
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	e.Status, e.PendingOp = EntryStatusPending, PendingCreate
	e.CreatedAt, e.KeyOwnedSince, e.UpdatedAt = now, now, now
	e.RequestID = reqID
	e.CID = CID(reqID, e)
	corr := uuid.New()

	var out Entry
	replayed := false
	err = s.inTx(ctx, "create key", only(c), func(q *sqlc.Queries) error {
		if prior, done, err := s.claimRequest(ctx, q, reqID, c.Participant, "CreateKey", fp); err != nil || done {
			out, replayed = prior, done
			return err
		}
		if err := q.LockAccount(ctx, lockAccountParams(e.Account)); err != nil {
			return err
		}
		if existing, err := q.GetEntryForUpdate(ctx, e.Key); err == nil {
			if existing.Status != EntryStatusFailed.String() {
				return conflictFor(entryFromRow(existing), c.Participant, e.Owner.TaxID)
			}
			// A create the directory refused holds no key: this one replaces it.
			if err := q.DeleteEntry(ctx, e.Key); err != nil {
				return err
			}
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err := lockedByClaim(ctx, q, e.Key); err != nil {
			return err
		}
		n, err := q.CountAccountEntries(ctx, countAccountParams(e.Account))
		if err != nil {
			return err
		}
		if limit := MaxKeysPerAccount(e.Owner.Type); n >= int64(limit) {
			return E(KindPrecondition, ReasonEntryLimitExceeded,
				"the account already holds %d keys, the most a %s may have on one account", n, ownerWord(e.Owner.Type))
		}
		ins := insertParams(e)
		ins.PendingOp = pgtype.Text{String: PendingCreate, Valid: true}
		ins.PendingRequestID = uuid.NullUUID{UUID: reqID, Valid: true}
		ins.PendingCorrelation = uuid.NullUUID{UUID: corr, Valid: true}
		if err := q.InsertEntry(ctx, ins); err != nil {
			return err
		}
		if err := s.record(ctx, q, c, "CreateKey", e.Key, reqID, ReasonUnspecified, nil, &e); err != nil {
			return err
		}
		if err := s.requestDirectory(ctx, q, c, corr, reqID, e.Key, &dictv1.DirectoryRequest{
			Operation: &dictv1.DirectoryRequest_CreateEntry{CreateEntry: &dictv1.DirCreateEntry{
				KeyType: dictv1.KeyType(e.KeyType), Key: dirKey, Account: dirAccount(e.Account), Owner: dirOwner(e.Owner)}}}); err != nil {
			return err
		}
		out = e
		return s.answerRequest(ctx, q, reqID, e)
	})
	if isUniqueViolation(err, "entries_pkey") {
		// A concurrent create on another account won the key between our
		// check and insert, or another participant of this instance holds
		// it (its entry is not visible to the caller's participant set);
		// report it as the check would have.
		if inSet, sameOwner, ok, gerr := s.keyHolder(ctx, only(c), e.Key, e.Owner.TaxID); gerr == nil && ok {
			return Entry{}, conflictWith(inSet, sameOwner)
		}
		return Entry{}, E(KindConflict, ReasonEntryAlreadyExists, "the key is already registered")
	}
	if err != nil {
		return Entry{}, err
	}
	if !replayed && s.cache != nil {
		s.cache.Invalidate(ctx, out.Key)
	}
	s.logger.InfoContext(ctx, "key create sent to the directory", "key", MaskForLog(out.Key), "key_type", out.KeyType.String(), "participant", c.Participant)
	return out, nil
}

// validateCreate normalises a create request, reporting every bad field.
func validateCreate(in CreateKeyInput) (Entry, error) {
	var v violations
	e := Entry{KeyType: in.KeyType}
	switch {
	case in.KeyType == KeyTypeUnspecified:
		v.add("key_type", "key_type is required: CPF, CNPJ, PHONE, EMAIL or EVP")
	case in.KeyType == KeyTypeEVP:
		if in.Key != "" {
			v.add("key", "an EVP key is generated by the server; send an empty key")
		}
	default:
		k, err := NormalizeKey(in.KeyType, in.Key)
		v.addError(err)
		e.Key = k
	}
	acc, err := in.Account.Normalize()
	v.addError(err)
	owner, err := in.Owner.Normalize()
	v.addError(err)
	e.Account, e.Owner = acc, owner
	if err := v.err(); err != nil {
		return Entry{}, err
	}
	if err := checkKeyOwner(e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// checkKeyOwner applies BCB's rule that a CPF key is its natural-person
// owner's CPF and a CNPJ key its legal-person owner's CNPJ.
func checkKeyOwner(e Entry) error {
	switch e.KeyType {
	case KeyTypeCPF:
		if e.Owner.Type != OwnerTypeNaturalPerson {
			return &Error{Kind: KindInvalid, Reason: ReasonEntryInvalid, Field: "owner.type", Msg: "a CPF key must belong to a natural person"}
		}
	case KeyTypeCNPJ:
		if e.Owner.Type != OwnerTypeLegalPerson {
			return &Error{Kind: KindInvalid, Reason: ReasonEntryInvalid, Field: "owner.type", Msg: "a CNPJ key must belong to a legal person"}
		}
	default:
		return nil
	}
	if e.Key != e.Owner.TaxID {
		return &Error{Kind: KindInvalid, Reason: ReasonEntryTaxIDNumberByDifferentOwner, Field: "key",
			Msg: "a " + e.KeyType.String() + " key must equal the owner's tax id (owner.tax_id)"}
	}
	return nil
}

// conflictFor explains why a key that is already registered cannot be
// created: here already, at another participant with the same owner
// (portability), or with another owner (ownership).
func conflictFor(existing Entry, participant, taxID string) error {
	return conflictWith(existing.Account.Participant == participant, existing.Owner.TaxID == taxID)
}

// conflictWith is [conflictFor] from what is known of the holder: whether
// it is the caller's participant and whether the owner is the same.
func conflictWith(sameParticipant, sameOwner bool) error {
	switch {
	case sameParticipant && sameOwner:
		return E(KindConflict, ReasonEntryAlreadyExists, "the key is already registered for this participant")
	case sameOwner:
		return E(KindConflict, ReasonEntryKeyInCustodyOfDifferentParticipant,
			"the key is registered at another participant for the same owner; open a PORTABILITY claim")
	default:
		return E(KindConflict, ReasonEntryKeyOwnedByDifferentPerson,
			"the key is registered for another owner; open an OWNERSHIP claim")
	}
}

func lockedByClaim(ctx context.Context, q *sqlc.Queries, key string) error {
	if _, err := q.OpenClaimForKey(ctx, key); err == nil {
		return E(KindPrecondition, ReasonEntryLockedByClaim, "the key is under an open claim")
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return nil
}

func ownerWord(t OwnerType) string {
	if t == OwnerTypeLegalPerson {
		return "legal person"
	}
	return "natural person"
}

// GetKey returns one of the caller participant's own entries. Another
// participant's key is reported as not found, so its existence is not
// revealed.
func (s *Service) GetKey(ctx context.Context, c Caller, t KeyType, key string) (Entry, error) {
	_, k, err := NormalizeAnyKey(t, key)
	if err != nil {
		return Entry{}, err
	}
	e, err := s.entry(ctx, c, k)
	if errors.Is(err, errNoOwnEntry) {
		// An EVP created here is found by the request id that created it:
		// its key until the directory generated one, and after.
		if id, perr := uuid.Parse(k); perr == nil && len(k) == 36 {
			var row sqlc.Entry
			qerr := s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
				row, err = q.GetEVPEntryByRequest(ctx, sqlc.GetEVPEntryByRequestParams{RequestID: id, Participant: c.Participant})
				return err
			})
			if qerr == nil {
				return entryFromRow(row), nil
			}
			if !errors.Is(qerr, pgx.ErrNoRows) {
				return Entry{}, dbError("get key", qerr)
			}
		}
	}
	if err != nil {
		return Entry{}, err
	}
	if e.Account.Participant != c.Participant {
		return Entry{}, errNoOwnEntry
	}
	return e, nil
}

// ownEntryForUpdate locks one of the caller participant's entries for a
// change; another participant's entry is not found, so its existence is
// not revealed.
func ownEntryForUpdate(ctx context.Context, q *sqlc.Queries, key, participant string) (sqlc.Entry, error) {
	row, err := q.GetEntryForUpdate(ctx, key)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && row.Participant != participant) {
		return sqlc.Entry{}, errNoOwnEntry
	}
	return row, err
}

var errNoOwnEntry = E(KindNotFound, ReasonEntryNotFound, "no entry for this key at the caller's participant")

// entry reads one of the caller participant's entries, through the
// read-through cache when there is one. The cache holds the entries of
// every participant this instance serves, so the caller still checks the
// entry's participant; the database shows only the caller's.
func (s *Service) entry(ctx context.Context, c Caller, key string) (Entry, error) {
	load := func(ctx context.Context) (Entry, bool, error) {
		var row sqlc.Entry
		err := s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
			row, err = q.GetEntry(ctx, key)
			return err
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return Entry{}, false, nil
		}
		if err != nil {
			return Entry{}, false, dbError("get key", err)
		}
		return entryFromRow(row), true, nil
	}
	var (
		e     Entry
		found bool
		err   error
	)
	if s.cache == nil {
		e, found, err = load(ctx)
	} else {
		e, found, err = s.cache.Get(ctx, key, c.Participant, load)
	}
	if err == nil && !found {
		err = errNoOwnEntry
	}
	return e, err
}

// ListKeysInput filters and pages ListKeys. With an account (branch, number
// and type) it lists that account's keys; with an owner tax id that owner's;
// with neither, all of the participant's keys.
type ListKeysInput struct {
	Account    *Account
	OwnerTaxID string
	PageSize   int
	PageToken  string
}

// ListKeys lists the caller participant's entries in key order.
func (s *Service) ListKeys(ctx context.Context, c Caller, in ListKeysInput) ([]Entry, string, error) {
	size := in.PageSize
	switch {
	case size < 0 || size > MaxPageSize:
		return nil, "", Invalid("page_size", "page_size must be between 0 and %d", MaxPageSize)
	case size == 0:
		size = DefaultPageSize
	}
	after := ""
	if in.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.PageToken)
		if err != nil || len(b) > 128 {
			return nil, "", Invalid("page_token", "page_token is not one this service issued")
		}
		after = string(b)
	}
	limit := int32(size + 1)
	var rows []sqlc.Entry
	var err error
	switch {
	case in.Account != nil && in.OwnerTaxID != "":
		return nil, "", Invalid("owner_tax_id", "filter by account or by owner_tax_id, not both")
	case in.Account != nil:
		acc := *in.Account
		acc.Participant = c.Participant
		acc.OpenedAt = time.Unix(1, 0) // not part of the filter
		if acc, err = acc.Normalize(); err != nil {
			return nil, "", err
		}
		err = s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
			rows, err = q.ListEntriesByAccount(ctx, sqlc.ListEntriesByAccountParams{
				Participant: c.Participant, Branch: acc.Branch, AccountNumber: acc.Number,
				AccountType: acc.Type.String(), After: after, PageLimit: limit})
			return err
		})
	case in.OwnerTaxID != "":
		_, taxID, verr := NormalizeTaxIDAnyType("owner_tax_id", in.OwnerTaxID)
		if verr != nil {
			return nil, "", verr
		}
		err = s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
			rows, err = q.ListEntriesByOwner(ctx, sqlc.ListEntriesByOwnerParams{
				Participant: c.Participant, OwnerTaxID: taxID, After: after, PageLimit: limit})
			return err
		})
	default:
		err = s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
			rows, err = q.ListEntriesByParticipant(ctx, sqlc.ListEntriesByParticipantParams{
				Participant: c.Participant, After: after, PageLimit: limit})
			return err
		})
	}
	if err != nil {
		return nil, "", dbError("list keys", err)
	}
	next := ""
	if len(rows) > size {
		rows = rows[:size]
		next = base64.RawURLEncoding.EncodeToString([]byte(rows[size-1].Key))
	}
	return entriesFromRows(rows), next, nil
}

// UpdateKeyInput is a request to change an entry's account or names.
type UpdateKeyInput struct {
	RequestID string
	KeyType   KeyType
	Key       string
	Account   Account
	Owner     Owner
	Reason    Reason
}

var updateReasons = map[Reason]bool{ReasonUserRequested: true, ReasonBranchTransfer: true, ReasonReconciliation: true, ReasonRFBValidation: true}

// UpdateKey changes the account, the name or the trade name of one of the
// caller participant's entries; nothing else of an entry may change. The
// change waits for the directory: the entry answers PENDING (operation
// UPDATE) with its current data until the directory's response applies the
// change ([Service.ApplyDirectoryResponse]).
func (s *Service) UpdateKey(ctx context.Context, c Caller, in UpdateKeyInput) (Entry, error) {
	reqID, err := parseRequestID(in.RequestID)
	if err != nil {
		return Entry{}, err
	}
	if !updateReasons[in.Reason] {
		return Entry{}, Invalid("reason", "an update's reason must be USER_REQUESTED, BRANCH_TRANSFER, RECONCILIATION or RFB_VALIDATION")
	}
	_, key, err := NormalizeAnyKey(in.KeyType, in.Key)
	if err != nil {
		return Entry{}, err
	}
	if in.Account.Participant == "" {
		in.Account.Participant = c.Participant
	}
	var v violations
	acc, aerr := in.Account.Normalize()
	v.addError(aerr)
	if aerr == nil && acc.Participant != c.Participant {
		return Entry{}, &Error{Kind: KindPermissionDenied, Reason: ReasonForbidden, Field: "account.participant",
			Msg: "account.participant must be the participant the caller acts for"}
	}
	if err := v.err(); err != nil {
		return Entry{}, err
	}
	fp := fingerprint("UpdateKey", c.Participant, struct {
		Key     string
		Account Account
		Owner   Owner
		Reason  Reason
	}{key, acc, in.Owner, in.Reason})

	var out Entry
	replayed := false
	err = s.inTx(ctx, "update key", only(c), func(q *sqlc.Queries) error {
		if prior, done, err := s.claimRequest(ctx, q, reqID, c.Participant, "UpdateKey", fp); err != nil || done {
			out, replayed = prior, done
			return err
		}
		row, err := ownEntryForUpdate(ctx, q, key, c.Participant)
		if err != nil {
			return err
		}
		before := entryFromRow(row)
		if err := writable(before); err != nil {
			return err
		}
		owner := in.Owner
		// Only the names may change; type and tax id, when sent, must match.
		if owner.Type == OwnerTypeUnspecified {
			owner.Type = before.Owner.Type
		}
		if owner.TaxID == "" {
			owner.TaxID = before.Owner.TaxID
		}
		owner, err = owner.Normalize()
		if err != nil {
			return err
		}
		if owner.Type != before.Owner.Type || owner.TaxID != before.Owner.TaxID {
			return Invalid("owner.tax_id", "an update may change only the account, the name and the trade name; owner.type and owner.tax_id must stay as registered")
		}
		after := before
		after.Account, after.Owner = acc, owner
		after.UpdatedAt = s.now().UTC().Truncate(time.Microsecond)
		after.CID = CID(before.RequestID, after)
		if acc.Participant != before.Account.Participant || acc.Branch != before.Account.Branch ||
			acc.Number != before.Account.Number || acc.Type != before.Account.Type {
			if err := q.LockAccount(ctx, lockAccountParams(acc)); err != nil {
				return err
			}
			n, err := q.CountAccountEntries(ctx, countAccountParams(acc))
			if err != nil {
				return err
			}
			if limit := MaxKeysPerAccount(owner.Type); n >= int64(limit) {
				return E(KindPrecondition, ReasonEntryLimitExceeded,
					"the new account already holds %d keys, the most a %s may have on one account", n, ownerWord(owner.Type))
			}
		}
		change, err := json.Marshal(after)
		if err != nil {
			return err
		}
		pending := before
		pending.Status, pending.PendingOp, pending.UpdatedAt = EntryStatusPending, PendingUpdate, after.UpdatedAt
		pending.FailureReason, pending.FailureMessage = "", ""
		corr := uuid.New()
		if err := q.SetEntryPending(ctx, sqlc.SetEntryPendingParams{
			PendingOp: PendingUpdate, PendingRequestID: uuid.NullUUID{UUID: reqID, Valid: true},
			PendingCorrelation: uuid.NullUUID{UUID: corr, Valid: true}, PendingReason: in.Reason.String(),
			PendingChange: change, UpdatedAt: pending.UpdatedAt, Key: key,
		}); err != nil {
			return err
		}
		if err := s.record(ctx, q, c, "UpdateKey", key, reqID, in.Reason, &before, &after); err != nil {
			return err
		}
		if err := s.requestDirectory(ctx, q, c, corr, reqID, key, &dictv1.DirectoryRequest{
			Operation: &dictv1.DirectoryRequest_UpdateEntry{UpdateEntry: &dictv1.DirUpdateEntry{
				Key: key, Account: dirAccount(acc), Owner: dirOwner(owner), Reason: dictv1.Reason(in.Reason)}}}); err != nil {
			return err
		}
		out = pending
		return s.answerRequest(ctx, q, reqID, pending)
	})
	if err != nil {
		return Entry{}, err
	}
	if !replayed && s.cache != nil {
		s.cache.Invalidate(ctx, out.Key)
	}
	return out, nil
}

// writable refuses a write to an entry that cannot take one now: one still
// waiting for the directory, or a create the directory refused.
func writable(e Entry) error {
	switch {
	case e.Status == EntryStatusPending:
		return errPendingOperation
	case e.Status == EntryStatusFailed:
		return errNoOwnEntry
	}
	return nil
}

// DeleteKeyInput is a request to remove an entry.
type DeleteKeyInput struct {
	RequestID string
	KeyType   KeyType
	Key       string
	Reason    Reason
}

var deleteReasons = map[Reason]bool{ReasonUserRequested: true, ReasonAccountClosure: true, ReasonReconciliation: true, ReasonFraud: true, ReasonRFBValidation: true}

// DeleteKey asks the directory to remove one of the caller participant's
// entries: the entry answers PENDING (operation DELETE) with its data until
// the directory's response removes it ([Service.ApplyDirectoryResponse]). A
// create the directory refused (FAILED) is removed at once, with status
// DELETED: the directory never held it.
func (s *Service) DeleteKey(ctx context.Context, c Caller, in DeleteKeyInput) (Entry, error) {
	reqID, err := parseRequestID(in.RequestID)
	if err != nil {
		return Entry{}, err
	}
	if !deleteReasons[in.Reason] {
		return Entry{}, Invalid("reason", "a delete's reason must be USER_REQUESTED, ACCOUNT_CLOSURE, RECONCILIATION, FRAUD or RFB_VALIDATION")
	}
	_, key, err := NormalizeAnyKey(in.KeyType, in.Key)
	if err != nil {
		return Entry{}, err
	}
	fp := fingerprint("DeleteKey", c.Participant, struct {
		Key    string
		Reason Reason
	}{key, in.Reason})
	var out Entry
	replayed := false
	err = s.inTx(ctx, "delete key", only(c), func(q *sqlc.Queries) error {
		if prior, done, err := s.claimRequest(ctx, q, reqID, c.Participant, "DeleteKey", fp); err != nil || done {
			out, replayed = prior, done
			return err
		}
		row, err := ownEntryForUpdate(ctx, q, key, c.Participant)
		if err != nil {
			return err
		}
		if err := lockedByClaim(ctx, q, key); err != nil {
			return err
		}
		before := entryFromRow(row)
		now := s.now().UTC().Truncate(time.Microsecond)
		if before.Status == EntryStatusFailed {
			if err := q.DeleteEntry(ctx, key); err != nil {
				return err
			}
			after := before
			after.Status, after.UpdatedAt = EntryStatusDeleted, now
			if err := s.record(ctx, q, c, "DeleteKey", key, reqID, in.Reason, &before, &after); err != nil {
				return err
			}
			out = after
			return s.answerRequest(ctx, q, reqID, after)
		}
		if err := writable(before); err != nil {
			return err
		}
		pending := before
		pending.Status, pending.PendingOp, pending.UpdatedAt = EntryStatusPending, PendingDelete, now
		pending.FailureReason, pending.FailureMessage = "", ""
		corr := uuid.New()
		if err := q.SetEntryPending(ctx, sqlc.SetEntryPendingParams{
			PendingOp: PendingDelete, PendingRequestID: uuid.NullUUID{UUID: reqID, Valid: true},
			PendingCorrelation: uuid.NullUUID{UUID: corr, Valid: true}, PendingReason: in.Reason.String(),
			UpdatedAt: now, Key: key,
		}); err != nil {
			return err
		}
		if err := s.record(ctx, q, c, "DeleteKey", key, reqID, in.Reason, &before, &pending); err != nil {
			return err
		}
		if err := s.requestDirectory(ctx, q, c, corr, reqID, key, &dictv1.DirectoryRequest{
			Operation: &dictv1.DirectoryRequest_DeleteEntry{DeleteEntry: &dictv1.DirDeleteEntry{
				Key: key, Reason: dictv1.Reason(in.Reason)}}}); err != nil {
			return err
		}
		out = pending
		return s.answerRequest(ctx, q, reqID, pending)
	})
	if err != nil {
		return Entry{}, err
	}
	if !replayed && s.cache != nil {
		s.cache.Invalidate(ctx, out.Key)
	}
	return out, nil
}

// LookupInput is a lookup before a payment.
type LookupInput struct {
	KeyType    KeyType
	Key        string
	PayerID    string
	EndToEndID string
}

// PayerView is what the payer may be shown about the receiver (DOMAIN.md).
type PayerView struct {
	Key             string
	Name            string
	TradeName       string
	TaxIDMasked     string
	ParticipantName string
}

// LookupKey answers a lookup for a payment. Keys held by the caller's own
// participant are answered from its own data, as BCB requires, and never
// sent; any other key is asked of the directory ([Directory.Lookup]),
// cached per DOMAIN.md.
func (s *Service) LookupKey(ctx context.Context, c Caller, in LookupInput) (Entry, PayerView, error) {
	_, key, err := NormalizeAnyKey(in.KeyType, in.Key)
	if err != nil {
		return Entry{}, PayerView{}, err
	}
	payerType, payerID, err := NormalizeTaxIDAnyType("payer_id", in.PayerID)
	if err != nil {
		return Entry{}, PayerView{}, err
	}
	if err := ValidateEndToEndID(in.EndToEndID, c.Participant); err != nil {
		return Entry{}, PayerView{}, err
	}
	// The caller's own entry first (the entry cache answers it from this
	// process's memory): an own key is answered here, never sent, and is
	// admitted and charged in one step. Nothing is answered before the
	// payer's bucket admits the lookup.
	e, err := s.entry(ctx, c, key)
	own := err == nil && e.Account.Participant == c.Participant && e.inDirectory()
	if err != nil && !errors.Is(err, errNoOwnEntry) {
		return Entry{}, PayerView{}, err
	}
	sent := false
	// A key of another participant whose answer is in the directory cache
	// (a legal person's, at most 180 s old) is, like an own key, answered
	// here, found: the payer's bucket admits and charges it in one step.
	answered := own
	if !own && s.directoryCache != nil {
		if ce, ok := s.directoryCache.Get(ctx, key, s.directoryTTL); ok {
			e, answered = ce, true
		}
	}
	if answered {
		if s.antiScan != nil {
			if err := s.antiScan.TakeAnswered(ctx, payerType, payerID); err != nil {
				return Entry{}, PayerView{}, err
			}
		}
	} else {
		// Not the caller's own key: BCB's answer, through the directory
		// (or its cache), once the payer's bucket admits it; the
		// participant's bucket admits it before it is sent.
		if s.antiScan != nil {
			if err := s.antiScan.AdmitPayer(ctx, payerType, payerID); err != nil {
				return Entry{}, PayerView{}, err
			}
		}
		e, err = s.lookupDirectory(ctx, c, key, payerID, in.EndToEndID, &sent)
		found := err == nil
		if err != nil && !errors.Is(err, errKeyNotInDirectory) {
			return Entry{}, PayerView{}, err
		}
		if s.antiScan != nil {
			if err := s.antiScan.SettleLookup(ctx, c.Participant, payerType, payerID, found, sent); err != nil {
				return Entry{}, PayerView{}, err
			}
		}
		if !found {
			return Entry{}, PayerView{}, errKeyNotInDirectory
		}
	}
	if s.counter != nil {
		s.counter.Incr(ctx, e.Key, 1)
	}
	if s.lookups != nil {
		// Best effort: without it, the payment that follows earns no credit.
		if err := s.lookups.Put(ctx, lookupLedgerKey(c.Participant, in.EndToEndID, payerID), ledgerValue(e.Key, sent)); err != nil {
			s.logger.WarnContext(ctx, "lookup not remembered for the payment credit", "err", err)
		}
	}
	return e, PayerView{
		Key:             e.Key,
		Name:            e.Owner.Name,
		TradeName:       e.Owner.TradeName,
		TaxIDMasked:     MaskTaxIDForPayer(e.Owner.TaxID),
		ParticipantName: s.names[e.Account.Participant],
	}, nil
}

var errKeyNotInDirectory = E(KindNotFound, ReasonEntryNotFound, "the key has no entry in the directory")

// lookupDirectory asks the DICT for a key this PSP does not hold. Answers
// about legal persons' keys are cached for at most 180 s, shared across
// instances with one directory call per key at a time; natural persons'
// keys are never cached (DOMAIN.md).
// *sent tells whether the lookup went to the DICT (not answered by the
// cache), after the participant's anti-scanning bucket admitted it.
func (s *Service) lookupDirectory(ctx context.Context, c Caller, key, payerID, e2e string, sent *bool) (Entry, error) {
	if s.directory == nil {
		return Entry{}, errDirectoryNotWired
	}
	load := func(ctx context.Context) (Entry, bool, error) {
		if s.antiScan != nil {
			if err := s.antiScan.AdmitParticipant(ctx, c.Participant); err != nil {
				return Entry{}, false, err
			}
		}
		e, found, err := s.directory.Lookup(ctx, c.Participant, key, payerID, e2e)
		*sent = err == nil
		if err != nil {
			return Entry{}, false, err
		}
		if !found {
			return Entry{}, false, errKeyNotInDirectory
		}
		return e, e.Owner.Type == OwnerTypeLegalPerson, nil
	}
	if s.directoryCache == nil {
		e, _, err := load(ctx)
		return e, err
	}
	return s.directoryCache.GetOrLoad(ctx, key, s.directoryTTL, load)
}

// CreditPayment credits the anti-scanning buckets for a payment sent after
// a lookup. Only a lookup this service answered, for the same payer, earns
// a credit, and only once: otherwise crediting would refill the buckets
// that guard against scanning.
func (s *Service) CreditPayment(ctx context.Context, c Caller, payerID, endToEndID string) (bool, error) {
	payerType, payer, err := NormalizeTaxIDAnyType("payer_id", payerID)
	if err != nil {
		return false, err
	}
	if err := ValidateEndToEndID(endToEndID, c.Participant); err != nil {
		return false, err
	}
	if s.lookups == nil || s.antiScan == nil {
		return false, E(KindUnavailable, ReasonUnavailable, "payment credits are not available on this instance")
	}
	v, ok, err := s.lookups.Take(ctx, lookupLedgerKey(c.Participant, endToEndID, payer))
	if err != nil {
		return false, &Error{Kind: KindUnavailable, Reason: ReasonUnavailable, Msg: "payment credits are unavailable; retry later", Err: err}
	}
	if !ok {
		return false, nil
	}
	if err := s.antiScan.CreditPayment(ctx, c.Participant, payerType, payer, !strings.HasPrefix(v, ledgerAnsweredHere)); err != nil {
		return false, err
	}
	return true, nil
}

// ledgerAnsweredHere marks, in the lookup ledger, a lookup answered here
// (an own key, a cached answer), which the participant's bucket was not
// charged for, so its payment credits only the payer's. A value without it
// (a lookup sent to the DICT, or one remembered before the mark existed)
// credits both. No normalized key starts with it.
const ledgerAnsweredHere = "~"

func ledgerValue(key string, sent bool) string {
	if sent {
		return key
	}
	return ledgerAnsweredHere + key
}

// lookupLedgerKey names a lookup by who made it, for whom and for which
// payment, so that only that payer's payment can take its credit.
func lookupLedgerKey(participant, endToEndID, payerID string) string {
	return participant + ":" + endToEndID + ":" + payerID
}

// ApplyLookupCounts adds one batch of per-key lookup counts to PostgreSQL,
// once per batch id (the write-behind counter's flush).
func (s *Service) ApplyLookupCounts(ctx context.Context, batchID string, counts map[string]int64) error {
	keys := make([]string, 0, len(counts))
	ns := make([]int64, 0, len(counts))
	for k, n := range counts {
		keys = append(keys, k)
		ns = append(ns, n)
	}
	now := s.now().UTC()
	// The lookup statistics are PSP-wide (no participant's rows).
	return s.inTx(ctx, "apply lookup counts", nil, func(q *sqlc.Queries) error {
		n, err := q.ClaimLookupBatch(ctx, sqlc.ClaimLookupBatchParams{BatchID: batchID, AppliedAt: now})
		if err != nil || n == 0 {
			return err
		}
		return q.AddLookupCounts(ctx, sqlc.AddLookupCountsParams{Keys: keys, Counts: ns, At: now})
	})
}

// LookupCount is how many lookups of key have been flushed to PostgreSQL.
func (s *Service) LookupCount(ctx context.Context, key string) (int64, error) {
	var n int64
	err := s.read(ctx, nil, func(q *sqlc.Queries) (err error) {
		n, err = q.GetLookupCount(ctx, key)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, dbError("lookup count", err)
	}
	return n, nil
}

// errDirectoryNotWired answers requests that need the central DICT.
var errDirectoryNotWired = E(KindUnimplemented, ReasonNotImplemented,
	"this key is not held by the caller's participant, and lookups through the central directory (DICT) are not available in this build")

// KeyExistence tells whether a key has an entry.
type KeyExistence struct {
	Key      string
	HasEntry bool
}

// CheckKeys tells which of 1 to 200 keys have entries. Keys the caller's
// participant holds are answered from its own data; the others are asked
// of the directory in one check_keys request.
func (s *Service) CheckKeys(ctx context.Context, c Caller, keys []string) ([]KeyExistence, error) {
	if len(keys) == 0 || len(keys) > MaxCheckKeys {
		return nil, Invalid("keys", "keys must hold between 1 and %d keys; got %d", MaxCheckKeys, len(keys))
	}
	norm := make([]string, len(keys))
	var v violations
	for i, k := range keys {
		_, n, err := NormalizeAnyKey(KeyTypeUnspecified, k)
		if err != nil {
			v.add("keys["+itoa(i)+"]", "%s", errorMsg(err))
			continue
		}
		norm[i] = n
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	var found []string
	err := s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
		found, err = q.OwnEntriesExist(ctx, sqlc.OwnEntriesExistParams{Participant: c.Participant, Keys: norm})
		return err
	})
	if err != nil {
		return nil, dbError("check keys", err)
	}
	have := make(map[string]bool, len(found))
	for _, k := range found {
		have[k] = true
	}
	var ask []string
	asked := map[string]bool{}
	for _, k := range norm {
		if !have[k] && !asked[k] {
			asked[k] = true
			ask = append(ask, k)
		}
	}
	if len(ask) > 0 {
		if s.directory == nil {
			return nil, errDirectoryNotWired
		}
		there, err := s.directory.CheckKeys(ctx, c.Participant, ask)
		if err != nil {
			return nil, err
		}
		for k, ok := range there {
			if ok && asked[k] {
				have[k] = true
			}
		}
	}
	out := make([]KeyExistence, len(norm))
	for i, k := range norm {
		out[i] = KeyExistence{Key: k, HasEntry: have[k]}
	}
	return out, nil
}

// SyncStatus is the synchronisation state of one key type.
type SyncStatus struct {
	KeyType    KeyType
	VSync      string
	EntryCount int64
	LastCheck  time.Time // zero when never checked
	Result     string    // "", [SyncMatch], [SyncMismatch] or [SyncRepaired]
}

// GetSyncStatus reports, per key type, the VSync of the caller participant's
// entries (aggregated from the stored CIDs, so always current), their count
// and the last check against the directory.
func (s *Service) GetSyncStatus(ctx context.Context, c Caller) ([]SyncStatus, error) {
	var rows []sqlc.VSyncByKeyTypeRow
	var checks []sqlc.LatestSyncChecksRow
	err := s.read(ctx, only(c), func(q *sqlc.Queries) (err error) {
		if rows, err = q.VSyncByKeyType(ctx, c.Participant); err != nil {
			return err
		}
		checks, err = q.LatestSyncChecks(ctx, c.Participant)
		return err
	})
	if err != nil {
		return nil, dbError("sync status", err)
	}
	out := make([]SyncStatus, len(KeyTypes))
	for i, t := range KeyTypes {
		out[i] = SyncStatus{KeyType: t, VSync: WordsToHex([4]int64{})}
		for _, r := range rows {
			if r.KeyType == t.String() {
				out[i].VSync = WordsToHex([4]int64{r.W0, r.W1, r.W2, r.W3})
				out[i].EntryCount = r.EntryCount
			}
		}
		for _, ck := range checks {
			if ck.KeyType == t.String() {
				out[i].LastCheck, out[i].Result = ck.CheckedAt.UTC(), ck.Result
			}
		}
	}
	return out, nil
}

// claimRequest takes a RequestId for an entry write (see requestOnce).
func (s *Service) claimRequest(ctx context.Context, q *sqlc.Queries, id uuid.UUID, participant, op string, fp []byte) (Entry, bool, error) {
	return requestOnce[Entry](ctx, q, id, participant, op, fp)
}

func (s *Service) answerRequest(ctx context.Context, q *sqlc.Queries, id uuid.UUID, e Entry) error {
	return storeAnswer(ctx, q, id, e)
}

// requestOnce takes a RequestId for this request: false when id is new
// (taken now); when it was already used, the first answer (true) if the
// request is the same, and RequestIdAlreadyUsed if it is not.
func requestOnce[T any](ctx context.Context, q *sqlc.Queries, id uuid.UUID, participant, op string, fp []byte) (T, bool, error) {
	var zero T
	n, err := q.ClaimRequestID(ctx, sqlc.ClaimRequestIDParams{RequestID: id, Participant: participant, Operation: op, Fingerprint: fp})
	if err != nil {
		return zero, false, err
	}
	if n == 1 {
		return zero, false, nil
	}
	prior, err := q.GetRequest(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		// Taken by another participant's request, which this
		// transaction's participant set does not see.
		prior, err = sqlc.Request{}, nil
	}
	if err != nil {
		return zero, false, err
	}
	if string(prior.Fingerprint) != string(fp) || prior.Response == nil {
		return zero, false, &Error{Kind: KindConflict, Reason: ReasonRequestIDAlreadyUsed, Field: "request_id",
			Msg: "request_id was already used for a different request; use a new UUID for each request"}
	}
	var answer T
	if err := json.Unmarshal(prior.Response, &answer); err != nil {
		return zero, false, err
	}
	return answer, true, nil
}

// storeAnswer stores a request's first answer, which a retry gets back.
func storeAnswer[T any](ctx context.Context, q *sqlc.Queries, id uuid.UUID, answer T) error {
	b, err := json.Marshal(answer)
	if err != nil {
		return err
	}
	return q.SetRequestResponse(ctx, sqlc.SetRequestResponseParams{RequestID: id, Response: b})
}

// record writes the audit row of a change.
func (s *Service) record(ctx context.Context, q *sqlc.Queries, c Caller, action, key string, reqID uuid.UUID, r Reason, before, after *Entry) error {
	var b, a []byte
	var err error
	if before != nil {
		if b, err = json.Marshal(before); err != nil {
			return err
		}
	}
	if after != nil {
		if a, err = json.Marshal(after); err != nil {
			return err
		}
	}
	reason := ""
	if r != ReasonUnspecified {
		reason = r.String()
	}
	return q.InsertAudit(ctx, sqlc.InsertAuditParams{
		At: s.now().UTC(), Participant: c.Participant, Actor: c.Subject, Action: action, Key: key,
		RequestID: uuid.NullUUID{UUID: reqID, Valid: true}, Reason: reason, Before: b, After: a,
	})
}

func parseRequestID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, Invalid("request_id", "request_id must be a UUID (36 characters, e.g. 2f1b7c1e-...); one per request")
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, Invalid("request_id", "request_id must be a non-nil UUID")
	}
	return id, nil
}

// fingerprint identifies a request's data for RequestId idempotency.
func fingerprint(op, participant string, data any) []byte {
	b, _ := json.Marshal(struct {
		Op, Participant string
		Data            any
	}{op, participant, data})
	sum := sha256.Sum256(b)
	return sum[:]
}

func insertParams(e Entry) sqlc.InsertEntryParams {
	w, _ := CIDWords(e.CID)
	return sqlc.InsertEntryParams{
		Key: e.Key, KeyType: e.KeyType.String(), Participant: e.Account.Participant, Branch: e.Account.Branch,
		AccountNumber: e.Account.Number, AccountType: e.Account.Type.String(), AccountOpenedAt: e.Account.OpenedAt,
		OwnerType: e.Owner.Type.String(), OwnerTaxID: e.Owner.TaxID, OwnerName: e.Owner.Name, OwnerTradeName: e.Owner.TradeName,
		Status: e.Status.String(), CreatedAt: e.CreatedAt, KeyOwnedSince: e.KeyOwnedSince, UpdatedAt: e.UpdatedAt,
		RequestID: e.RequestID, Cid: e.CID, CidW0: w[0], CidW1: w[1], CidW2: w[2], CidW3: w[3],
	}
}

func lockAccountParams(a Account) sqlc.LockAccountParams {
	return sqlc.LockAccountParams{Participant: a.Participant, Branch: a.Branch, AccountNumber: a.Number, AccountType: a.Type.String()}
}

func countAccountParams(a Account) sqlc.CountAccountEntriesParams {
	return sqlc.CountAccountEntriesParams{Participant: a.Participant, Branch: a.Branch, AccountNumber: a.Number, AccountType: a.Type.String()}
}

func errorMsg(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return "invalid"
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
