// Package dictsim is a simulated central directory (BCB's DICT) behind the
// RSFN Pulsar topics, for local runs and end-to-end tests. It consumes every
// participant's DirectoryRequests (rpc/dict/v1/rsfn.proto), applies BCB's
// rules with package dict's validation, limits, CID and claim state machine,
// keeps the whole directory in its own PostgreSQL database, answers each
// request with a DirectoryResponse on its reply_to and pushes
// DirectoryNotices about claims to the other side.
//
// Refusals carry the DICT's reason names (DOMAIN.md's vocabulary). Where
// that vocabulary has no name, the simulator uses: "EntryNotFound"
// ([dict.ReasonEntryNotFound]) for a key with no entry (lookup, update,
// delete); "Forbidden" ([dict.ReasonForbidden]) for an update or delete of
// another participant's key; "ClaimNotFound" ([dict.ReasonClaimNotFound])
// for an unknown claim id.
//
// Processing is idempotent by correlation id (a redelivered request gets the
// stored response, and notice, again) and by RequestId (the same RequestId
// with the same data gets the first successful answer; with other data,
// RequestIdAlreadyUsed). Requests are consumed on a Key_Shared subscription
// so one key's requests are handled one at a time, in order.
package dictsim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim/store"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/telemetry"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// Event types of the RSFN topics (the event_type property).
const (
	EventDirectoryRequest  = "DirectoryRequest"
	EventDirectoryResponse = "DirectoryResponse"
	EventDirectoryNotice   = "DirectoryNotice"
	// PropertyContentType is the property naming the payload's encoding.
	PropertyContentType = "content_type"
	// ContentTypeProtobuf is the payload encoding of every RSFN message.
	ContentTypeProtobuf = "application/x-protobuf"
)

// Sim is one simulator instance. Build it with [New], start it with [Sim.Run].
type Sim struct {
	cfg      Config
	pool     *pgxpool.Pool
	ownPool  bool
	bus      *eventbus.Client
	log      *slog.Logger
	now      func() time.Time
	buckets  *memoryBuckets
	antiScan map[string]*dict.AntiScan // by category
	requests *prometheus.CounterVec

	mu        sync.Mutex
	producers map[string]*eventbus.Producer
}

// New builds a simulator from cfg: it opens the database (unless cfg.Pool is
// given) and the Pulsar client. It does not migrate ([Migrate]) and does not
// consume before [Sim.Run].
func New(ctx context.Context, cfg Config) (*Sim, error) {
	if cfg.RequestTopic == "" {
		cfg.RequestTopic = DefaultRequestTopic
	}
	if cfg.Subscription == "" {
		cfg.Subscription = DefaultSubscription
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.DefaultCategory == "" {
		cfg.DefaultCategory = DefaultCategory
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Pulsar.URL == "" {
		cfg.Pulsar = eventbus.DefaultConfig()
	}
	s := &Sim{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "dictsim"),
		now:       cfg.Now,
		antiScan:  map[string]*dict.AntiScan{},
		producers: map[string]*eventbus.Producer{},
	}
	s.buckets = newMemoryBuckets(cfg.Now)
	for cat := range dict.ParticipantBuckets {
		s.antiScan[cat], _ = dict.NewAntiScan(s.buckets, cat)
	}
	for ispb, cat := range cfg.Categories {
		if _, ok := dict.ParticipantBuckets[cat]; !ok {
			return nil, fmt.Errorf("dictsim: participant %s: category %q is not A to H", ispb, cat)
		}
	}
	if _, ok := dict.ParticipantBuckets[cfg.DefaultCategory]; !ok {
		return nil, fmt.Errorf("dictsim: default category %q is not A to H", cfg.DefaultCategory)
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dictsim_requests_total",
		Help: "Directory requests handled by the simulated DICT, by operation and result (ok, a DICT reason, replayed, expired, malformed).",
	}, []string{"operation", "result"})
	if err := cfg.Registerer.Register(s.requests); err != nil {
		return nil, fmt.Errorf("dictsim: register metrics: %w", err)
	}
	if cfg.Pool != nil {
		s.pool = cfg.Pool
	} else {
		pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			return nil, errors.New("DICTSIM_DATABASE_URL: not a valid PostgreSQL URL")
		}
		// A span per query handled inside a request's trace (otel's global provider).
		pc.ConnConfig.Tracer = telemetry.NewPGXTracer(nil)
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("DICTSIM_DATABASE_URL: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := pool.Ping(pctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("DICTSIM_DATABASE_URL: PostgreSQL does not answer (run `scripts/deps.sh up postgres`): %w", err)
		}
		s.pool, s.ownPool = pool, true
	}
	bus, err := eventbus.NewClient(cfg.Pulsar, eventbus.WithLogger(cfg.Logger), eventbus.WithRegisterer(cfg.Registerer))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("PULSAR_URL: %w", err)
	}
	s.bus = bus
	return s, nil
}

// Run records the configured notice topics, subscribes to the request
// topic and handles requests until ctx is done; then it waits for the
// requests in flight and returns nil.
func (s *Sim) Run(ctx context.Context) error {
	q := store.New(s.pool)
	for ispb, topic := range s.cfg.NoticeTopics {
		if err := q.ConfigureParticipant(ctx, store.ConfigureParticipantParams{Ispb: ispb, NoticeTopic: topic, UpdatedAt: s.now()}); err != nil {
			return fmt.Errorf("dictsim: configure participant %s: %w", ispb, err)
		}
	}
	c, err := s.bus.NewConsumer([]string{s.cfg.RequestTopic},
		eventbus.WithSubscription(s.cfg.Subscription, pulsar.KeyShared),
		eventbus.WithDeadLetter("", 0),
		eventbus.WithWorkers(s.cfg.Workers),
		eventbus.WithNackBackoff(100*time.Millisecond, 10*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	c.Register(EventDirectoryRequest, s.handle)
	s.log.InfoContext(ctx, "simulated DICT consuming", "topic", s.cfg.RequestTopic, "subscription", s.cfg.Subscription)
	return c.Run(ctx)
}

// Close flushes and closes the producers, the Pulsar client and the pool
// the simulator opened. Call it after Run has returned.
func (s *Sim) Close() {
	s.mu.Lock()
	for _, p := range s.producers {
		p.Close()
	}
	s.producers = map[string]*eventbus.Producer{}
	s.mu.Unlock()
	if s.bus != nil {
		s.bus.Close()
	}
	if s.ownPool {
		s.pool.Close()
	}
}

// answer is what one request produced: its response and, for claims, the
// notice for the other side. It is stored by correlation id and re-sent on
// redelivery.
type answer struct {
	replyTo, partitionKey string
	response              *dictv1.DirectoryResponse
	noticeTopic           string
	notice                *dictv1.DirectoryNotice
}

func (s *Sim) handle(ctx context.Context, d eventbus.Delivery) error {
	start := time.Now()
	req := new(dictv1.DirectoryRequest)
	if err := proto.Unmarshal(d.Payload, req); err != nil || req.GetCorrelationId() == "" || req.GetReplyTo() == "" {
		s.requests.WithLabelValues("unknown", "malformed").Inc()
		s.log.WarnContext(ctx, "malformed directory request dropped", "event_id", d.EventID, "error", err)
		return nil
	}
	op := operationName(req)
	log := s.log.With("operation", op, "participant", req.GetParticipant(), "correlation_id", req.GetCorrelationId(),
		"key", dict.MaskForLog(d.Key))
	if dl := req.GetDeadline(); dl != nil && dl.IsValid() && s.now().After(dl.AsTime()) {
		s.requests.WithLabelValues(op, "expired").Inc()
		log.InfoContext(ctx, "request past its deadline dropped", "deadline", dl.AsTime())
		return nil
	}
	a, replayed, err := s.process(ctx, req, d.Key)
	if err != nil {
		log.ErrorContext(ctx, "request failed; it will be redelivered", "error", err)
		return err
	}
	if err := s.send(ctx, a); err != nil {
		log.ErrorContext(ctx, "response not published; the request will be redelivered and its stored response re-sent", "error", err)
		return err
	}
	result := "ok"
	if e := a.response.GetError(); e != nil {
		result = e.GetReason()
	}
	if replayed {
		result = "replayed"
	}
	s.requests.WithLabelValues(op, result).Inc()
	log.InfoContext(ctx, "request handled", "result", result, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

// process decides req in one transaction, or finds its stored answer.
// Reads take a shorter path ([Sim.processRead]).
func (s *Sim) process(ctx context.Context, req *dictv1.DirectoryRequest, partitionKey string) (a answer, replayed bool, err error) {
	if !isWrite(req) {
		return s.processRead(ctx, req, partitionKey)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return a, false, err
	}
	defer tx.Rollback(ctx)
	q := store.New(tx)
	if err := q.LockKey(ctx, "corr:"+req.GetCorrelationId()); err != nil {
		return a, false, err
	}
	if p, err := q.GetProcessed(ctx, req.GetCorrelationId()); err == nil {
		a, err := answerFromRow(p)
		return a, true, err
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return a, false, err
	}
	a = answer{replyTo: req.GetReplyTo(), partitionKey: partitionKey}
	if isWrite(req) {
		if err := q.LearnParticipant(ctx, store.LearnParticipantParams{Ispb: req.GetParticipant(), NoticeTopic: req.GetReplyTo(), UpdatedAt: s.now()}); err != nil {
			return a, false, err
		}
	}
	res, notice, err := s.decide(ctx, tx, req)
	if err != nil {
		return a, false, err
	}
	a.response = res
	if notice != nil {
		a.notice = notice
		topic, err := q.ParticipantNoticeTopic(ctx, notice.GetParticipant())
		switch {
		case err == nil:
			a.noticeTopic = topic
		case errors.Is(err, pgx.ErrNoRows):
			s.log.WarnContext(ctx, "no notice topic known for participant; notice not sent (set DICTSIM_NOTICE_TOPICS or let it send a write first)",
				"participant", notice.GetParticipant())
		default:
			return a, false, err
		}
	}
	resBytes, err := proto.Marshal(a.response)
	if err != nil {
		return a, false, err
	}
	var noticeBytes []byte
	if a.notice != nil {
		if noticeBytes, err = proto.Marshal(a.notice); err != nil {
			return a, false, err
		}
	}
	if _, err := q.InsertProcessed(ctx, store.InsertProcessedParams{
		CorrelationID: req.GetCorrelationId(), Participant: req.GetParticipant(), Operation: operationName(req),
		ReplyTo: a.replyTo, PartitionKey: partitionKey, Response: resBytes, NoticeTopic: a.noticeTopic,
		Notice: noticeBytes, ProcessedAt: s.now(),
	}); err != nil {
		return a, false, err
	}
	return a, false, tx.Commit(ctx)
}

// processRead answers a read (get_entry, check_keys, get_vsync,
// list_cids), or finds its stored answer, without a transaction: a read
// changes no row, so it needs neither the correlation id's lock nor a
// savepoint, only the record of its answer, so that a redelivered lookup
// gets the same answer and is not charged to the anti-scanning buckets
// twice. Key_Shared delivery hands one key's requests to one consumer in
// order, so one correlation id is not processed twice at once; should it
// be (a redelivery racing its first delivery), the first answer recorded
// is the one both send.
func (s *Sim) processRead(ctx context.Context, req *dictv1.DirectoryRequest, partitionKey string) (a answer, replayed bool, err error) {
	q := store.New(s.pool)
	corr := req.GetCorrelationId()
	if p, err := q.GetProcessed(ctx, corr); err == nil {
		a, err := answerFromRow(p)
		return a, true, err
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return a, false, err
	}
	a = answer{replyTo: req.GetReplyTo(), partitionKey: partitionKey}
	res := s.header(req)
	op := &operation{sim: s, q: q, req: req, now: res.GetAnsweredAt().AsTime(), res: res}
	if a.response, err = refusalOr(res, op.run(ctx), op.now); err != nil {
		return a, false, err
	}
	b, err := proto.Marshal(a.response)
	if err != nil {
		return a, false, err
	}
	n, err := q.InsertProcessed(ctx, store.InsertProcessedParams{
		CorrelationID: corr, Participant: req.GetParticipant(), Operation: operationName(req),
		ReplyTo: a.replyTo, PartitionKey: partitionKey, Response: b, ProcessedAt: s.now(),
	})
	if err != nil {
		return a, false, err
	}
	if n == 0 { // another delivery recorded its answer first: send that one
		p, err := q.GetProcessed(ctx, corr)
		if err != nil {
			return a, false, err
		}
		a, err := answerFromRow(p)
		return a, true, err
	}
	return a, false, nil
}

// header is the response to req without its result.
func (s *Sim) header(req *dictv1.DirectoryRequest) *dictv1.DirectoryResponse {
	return &dictv1.DirectoryResponse{
		CorrelationId: req.GetCorrelationId(),
		Participant:   req.GetParticipant(),
		RequestId:     req.GetRequestId(),
		AnsweredAt:    timestamppb.New(s.now().UTC().Truncate(time.Microsecond)),
	}
}

// refusalOr is res when the operation succeeded (err nil), the
// DirectoryError of a refusal (a [dict.Error] other than Internal), or
// err itself, which fails the request (it is redelivered).
func refusalOr(res *dictv1.DirectoryResponse, err error, now time.Time) (*dictv1.DirectoryResponse, error) {
	var de *dict.Error
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &de) && de.Kind != dict.KindInternal:
		out := &dictv1.DirectoryResponse{
			CorrelationId: res.CorrelationId, Participant: res.Participant, RequestId: res.RequestId, AnsweredAt: res.AnsweredAt,
			Error: &dictv1.DirectoryError{Reason: de.Reason, Message: de.Error()},
		}
		if de.Kind == dict.KindRateLimited {
			out.Error.RetryAt = timestamppb.New(now.Add(de.RetryAfter))
		}
		return out, nil
	default:
		return nil, err
	}
}

// decide applies req's operation in a savepoint of tx: a refusal rolls the
// savepoint back and becomes a DirectoryError; any other error fails the
// whole request (it is redelivered).
func (s *Sim) decide(ctx context.Context, tx pgx.Tx, req *dictv1.DirectoryRequest) (*dictv1.DirectoryResponse, *dictv1.DirectoryNotice, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	res := &dictv1.DirectoryResponse{
		CorrelationId: req.GetCorrelationId(),
		Participant:   req.GetParticipant(),
		RequestId:     req.GetRequestId(),
		AnsweredAt:    timestamppb.New(now),
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer sp.Rollback(ctx)
	op := &operation{sim: s, q: store.New(sp), req: req, now: now, res: res}
	err = op.run(ctx)
	var de *dict.Error
	switch {
	case err == nil:
		if err := sp.Commit(ctx); err != nil {
			return nil, nil, err
		}
		return res, op.notice, nil
	case errors.As(err, &de) && de.Kind != dict.KindInternal:
		if err := sp.Rollback(ctx); err != nil {
			return nil, nil, err
		}
		out := &dictv1.DirectoryResponse{
			CorrelationId: res.CorrelationId, Participant: res.Participant, RequestId: res.RequestId, AnsweredAt: res.AnsweredAt,
			Error: &dictv1.DirectoryError{Reason: de.Reason, Message: de.Error()},
		}
		if de.Kind == dict.KindRateLimited {
			out.Error.RetryAt = timestamppb.New(now.Add(de.RetryAfter))
		}
		return out, nil, nil
	default:
		return nil, nil, err
	}
}

// send publishes an answer's response, then its notice.
func (s *Sim) send(ctx context.Context, a answer) error {
	b, err := proto.Marshal(a.response)
	if err != nil {
		return err
	}
	if err := s.publish(ctx, a.replyTo, eventbus.Message{Key: a.partitionKey, Payload: b,
		EventID: a.response.GetCorrelationId(), EventType: EventDirectoryResponse,
		Properties: map[string]string{PropertyContentType: ContentTypeProtobuf}}); err != nil {
		return err
	}
	if a.notice == nil || a.noticeTopic == "" {
		return nil
	}
	if b, err = proto.Marshal(a.notice); err != nil {
		return err
	}
	return s.publish(ctx, a.noticeTopic, eventbus.Message{Key: a.notice.GetClaim().GetKey(), Payload: b,
		EventID: a.notice.GetNoticeId(), EventType: EventDirectoryNotice,
		Properties: map[string]string{PropertyContentType: ContentTypeProtobuf}})
}

func (s *Sim) publish(ctx context.Context, topic string, m eventbus.Message) error {
	s.mu.Lock()
	p, ok := s.producers[topic]
	if !ok {
		var err error
		// Publish is synchronous and flushes at once; batching stays on (see eventbus.NewRequester).
		if p, err = s.bus.NewProducer(topic); err != nil {
			s.mu.Unlock()
			return err
		}
		s.producers[topic] = p
	}
	s.mu.Unlock()
	_, err := p.Publish(ctx, m)
	return err
}

func answerFromRow(p store.ProcessedRequest) (answer, error) {
	a := answer{replyTo: p.ReplyTo, partitionKey: p.PartitionKey, noticeTopic: p.NoticeTopic, response: new(dictv1.DirectoryResponse)}
	if err := proto.Unmarshal(p.Response, a.response); err != nil {
		return a, err
	}
	if p.Notice != nil {
		a.notice = new(dictv1.DirectoryNotice)
		if err := proto.Unmarshal(p.Notice, a.notice); err != nil {
			return a, err
		}
	}
	return a, nil
}

func operationName(req *dictv1.DirectoryRequest) string {
	switch req.GetOperation().(type) {
	case *dictv1.DirectoryRequest_CreateEntry:
		return "create_entry"
	case *dictv1.DirectoryRequest_UpdateEntry:
		return "update_entry"
	case *dictv1.DirectoryRequest_DeleteEntry:
		return "delete_entry"
	case *dictv1.DirectoryRequest_GetEntry:
		return "get_entry"
	case *dictv1.DirectoryRequest_CheckKeys:
		return "check_keys"
	case *dictv1.DirectoryRequest_CreateClaim:
		return "create_claim"
	case *dictv1.DirectoryRequest_ClaimAction:
		return "claim_action"
	case *dictv1.DirectoryRequest_GetVsync:
		return "get_vsync"
	case *dictv1.DirectoryRequest_ListCids:
		return "list_cids"
	default:
		return "unspecified"
	}
}

func isWrite(req *dictv1.DirectoryRequest) bool {
	switch req.GetOperation().(type) {
	case *dictv1.DirectoryRequest_CreateEntry, *dictv1.DirectoryRequest_UpdateEntry, *dictv1.DirectoryRequest_DeleteEntry,
		*dictv1.DirectoryRequest_CreateClaim, *dictv1.DirectoryRequest_ClaimAction:
		return true
	}
	return false
}

// fingerprint identifies a write's data for RequestId idempotency.
func fingerprint(req *dictv1.DirectoryRequest) ([]byte, error) {
	var m proto.Message
	switch op := req.GetOperation().(type) {
	case *dictv1.DirectoryRequest_CreateEntry:
		m = op.CreateEntry
	case *dictv1.DirectoryRequest_UpdateEntry:
		m = op.UpdateEntry
	case *dictv1.DirectoryRequest_DeleteEntry:
		m = op.DeleteEntry
	case *dictv1.DirectoryRequest_CreateClaim:
		m = op.CreateClaim
	case *dictv1.DirectoryRequest_ClaimAction:
		m = op.ClaimAction
	default:
		return nil, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(operationName(req)))
	h.Write([]byte{0})
	h.Write(b)
	return h.Sum(nil), nil
}

// newID returns a random UUID for claims and notices.
func newID() string { return uuid.NewString() }
