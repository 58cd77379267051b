// Package dictbus links dict to the RSFN topics through eventbus, so that
// main and the end-to-end tests wire the same thing: the consumer that
// applies the directory's responses to writes (PULSAR_TOPIC_DICT_RES_IN),
// and the request/reply [dict.Directory] for lookups and CheckKeys, whose
// replies come back on a topic of this instance. dict never imports
// eventbus; this package adapts one to the other.
package dictbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/eventbus"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// Event types on the RSFN topics (rsfn.proto).
const (
	EventDirectoryRequest  = dict.EventDirectoryRequest
	EventDirectoryResponse = "DirectoryResponse"
	EventDirectoryNotice   = "DirectoryNotice"
)

// DefaultTimeout is how long a lookup or CheckKeys waits for the directory
// (DICT_DIRECTORY_TIMEOUT).
const DefaultTimeout = 5 * time.Second

// ResponsesConsumer is the apply-once record's consumer name of the
// responses consumer (processed_events.consumer).
const ResponsesConsumer = "dict-directory-responses"

// DefaultResendAfter is how long a write waits for the directory's answer
// before its request is sent again (DICT_DIRECTORY_RESEND_AFTER).
const DefaultResendAfter = 30 * time.Second

// MinResponseDeliveries is how many deliveries a directory response gets,
// at least, before it is dead-lettered.
const MinResponseDeliveries = 100

// Config is what [New] links.
type Config struct {
	// RequestTopic is PULSAR_TOPIC_DICT_REQ_OUT.
	RequestTopic string
	// ResponseTopic is PULSAR_TOPIC_DICT_RES_IN: the directory's answers to
	// writes, read by a shared subscription of every instance.
	ResponseTopic string
	// ReplyTopic is this instance's own topic for the replies to its reads
	// (see [ReplyTopic]).
	ReplyTopic string
	// Subscription is the responses consumer's subscription
	// (PULSAR_CONSUMER_SUBSCRIPTION); its type comes from the bus config.
	Subscription string
	// Timeout bounds a read's wait for its reply (default [DefaultTimeout]).
	Timeout time.Duration
	// Workers apply responses in parallel (default 4).
	Workers int
	// ResendAfter is how long a write may wait for the directory before its
	// DirectoryRequest is sent again (default [DefaultResendAfter]; negative:
	// never).
	ResendAfter time.Duration
	// Registerer receives the requester's metrics; nil registers none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// ReplyTopic names an instance's reply topic: the responses topic with the
// instance id appended.
func ReplyTopic(responseTopic, instanceID string) string { return responseTopic + "-" + instanceID }

// Link is one instance's connection to the directory.
type Link struct {
	requester *eventbus.Requester
	responses *eventbus.Consumer
	once      *eventbus.PGOnce
	timeout   time.Duration
	resend    time.Duration
	log       *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New subscribes to the responses topic and this instance's reply topic.
// Nothing is received before [Link.Start].
func New(bus *eventbus.Client, pool *pgxpool.Pool, cfg Config) (*Link, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.ResendAfter == 0 {
		cfg.ResendAfter = DefaultResendAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var ropts []eventbus.RequesterOption
	if cfg.Registerer != nil {
		ropts = append(ropts, eventbus.WithRequesterRegisterer(cfg.Registerer))
	}
	req, err := bus.NewRequester(cfg.RequestTopic, cfg.ReplyTopic, correlate, ropts...)
	if err != nil {
		return nil, err
	}
	// A response that cannot be applied now (the database down, a pool
	// exhausted) is retried with backoff rather than dead-lettered after
	// the bus's usual few deliveries: a lost response would leave its entry
	// PENDING for good. Only a response failing for about an hour and a half
	// (1 s doubling to 1 min between deliveries) reaches the dead-letter
	// topic.
	bc := bus.Config()
	copts := []eventbus.ConsumerOption{eventbus.WithWorkers(cfg.Workers),
		eventbus.WithDeadLetter(bc.DLQTopic, max(bc.MaxRedelivery, MinResponseDeliveries))}
	if cfg.Subscription != "" {
		copts = append(copts, eventbus.WithSubscription(cfg.Subscription, bus.Config().ConsumerType))
	}
	cons, err := bus.NewConsumer([]string{cfg.ResponseTopic}, copts...)
	if err != nil {
		req.Close()
		return nil, err
	}
	return &Link{
		requester: req, responses: cons, once: eventbus.NewPGOnce(pool, ResponsesConsumer),
		timeout: cfg.Timeout, resend: cfg.ResendAfter, log: cfg.Logger,
	}, nil
}

// ResponseOnce is what [dict.ServiceConfig.ResponseOnce] needs: the
// PostgreSQL apply-once record, by correlation id.
func (l *Link) ResponseOnce() dict.TxOnce { return l.once.ApplyTx }

// Directory is the [dict.Directory] of the link's request/reply; it is
// also a [dict.SyncDirectory].
func (l *Link) Directory() dict.Directory { return directory{l} }

// Start routes DirectoryResponses to svc and starts receiving.
func (l *Link) Start(svc *dict.Service) {
	l.responses.Register(EventDirectoryResponse, func(ctx context.Context, d eventbus.Delivery) error {
		var resp dictv1.DirectoryResponse
		if err := proto.Unmarshal(d.Payload, &resp); err != nil {
			return fmt.Errorf("dictbus: undecodable DirectoryResponse %s: %w", d.EventID, err)
		}
		if claim, err := svc.IsClaimResponse(ctx, &resp); err != nil || claim {
			if err != nil {
				return err
			}
			return svc.ApplyClaimResponse(ctx, &resp)
		}
		return svc.ApplyDirectoryResponse(ctx, &resp)
	})
	l.responses.Register(EventDirectoryNotice, func(ctx context.Context, d eventbus.Delivery) error {
		var n dictv1.DirectoryNotice
		if err := proto.Unmarshal(d.Payload, &n); err != nil {
			return fmt.Errorf("dictbus: undecodable DirectoryNotice %s: %w", d.EventID, err)
		}
		return svc.ApplyDirectoryNotice(ctx, &n)
	})
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Go(func() { _ = l.responses.Run(ctx) })
	l.wg.Go(func() { _ = l.requester.Run(ctx) })
	if l.resend > 0 {
		l.wg.Go(func() { l.resendPending(ctx, svc) })
	}
}

// Stop stops receiving (responses being applied finish first), then closes
// the subscriptions and the producer. Call it after the API has drained:
// a read in flight would lose its reply.
func (l *Link) Stop() {
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
	l.responses.Close()
	l.requester.Close()
}

// resendPending re-sends, every third of the resend age, the requests of
// writes the directory has not answered (see [dict.Service.ResendPending]).
func (l *Link) resendPending(ctx context.Context, svc *dict.Service) {
	t := time.NewTicker(l.resend / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := svc.ResendPending(ctx, l.resend, 500); err != nil && ctx.Err() == nil {
			l.log.WarnContext(ctx, "re-sending pending directory requests failed", "err", err)
		}
	}
}

// ReplyTo is the topic this instance's reads are answered on.
func (l *Link) ReplyTo() string { return l.requester.ReplyTo() }

func correlate(payload []byte, _ map[string]string) (string, error) {
	var resp dictv1.DirectoryResponse
	if err := proto.Unmarshal(payload, &resp); err != nil {
		return "", err
	}
	return resp.GetCorrelationId(), nil
}

type directory struct{ l *Link }

var _ dict.SyncDirectory = directory{}

// ask sends one read and waits for its answer.
func (d directory) ask(ctx context.Context, participant, key string, req *dictv1.DirectoryRequest) (*dictv1.DirectoryResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, d.l.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	corr := uuid.NewString()
	req.CorrelationId = corr
	req.Participant = participant
	req.ReplyTo = d.l.requester.ReplyTo()
	req.SentAt = timestamppb.Now()
	req.Deadline = timestamppb.New(deadline)
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, dict.Internal("directory request", err)
	}
	payload, err := d.l.requester.Request(ctx, corr, eventbus.Message{
		Key: key, Payload: b, EventID: corr, EventType: EventDirectoryRequest,
		Properties: map[string]string{"content_type": dict.DirectoryContentType, "participant": participant},
	})
	if err != nil {
		if errors.Is(err, eventbus.ErrNoReply) {
			return nil, &dict.Error{Kind: dict.KindUnavailable, Reason: dict.ReasonUnavailable,
				Msg: fmt.Sprintf("the directory (DICT) did not answer within %s; retry later", d.l.timeout), Err: err}
		}
		return nil, &dict.Error{Kind: dict.KindUnavailable, Reason: dict.ReasonUnavailable,
			Msg: "the directory (DICT) cannot be reached; retry later", Err: err}
	}
	var resp dictv1.DirectoryResponse
	if err := proto.Unmarshal(payload, &resp); err != nil {
		return nil, dict.Internal("directory response", err)
	}
	return &resp, nil
}

func refusal(e *dictv1.DirectoryError) error {
	var after time.Duration
	if t := e.GetRetryAt(); t != nil {
		after = time.Until(t.AsTime())
	}
	return dict.DirectoryRefusal(e.GetReason(), e.GetMessage(), after)
}

// Lookup implements [dict.Directory].
func (d directory) Lookup(ctx context.Context, participant, key, payerID, endToEndID string) (dict.Entry, bool, error) {
	resp, err := d.ask(ctx, participant, key, &dictv1.DirectoryRequest{Operation: &dictv1.DirectoryRequest_GetEntry{
		GetEntry: &dictv1.DirGetEntry{Key: key, PayerId: payerID, EndToEndId: endToEndID}}})
	if err != nil {
		return dict.Entry{}, false, err
	}
	if e := resp.GetError(); e != nil {
		if err := refusal(e); dict.KindOf(err) == dict.KindNotFound {
			return dict.Entry{}, false, nil
		} else {
			return dict.Entry{}, false, err
		}
	}
	if resp.GetEntry() == nil {
		return dict.Entry{}, false, dict.Internal("directory lookup", errors.New("answer without an entry"))
	}
	return dict.EntryFromProto(resp.GetEntry()), true, nil
}

// CheckKeys implements [dict.Directory].
func (d directory) CheckKeys(ctx context.Context, participant string, keys []string) (map[string]bool, error) {
	partition := ""
	if len(keys) > 0 {
		partition = keys[0]
	}
	resp, err := d.ask(ctx, participant, partition, &dictv1.DirectoryRequest{Operation: &dictv1.DirectoryRequest_CheckKeys{
		CheckKeys: &dictv1.DirCheckKeys{Keys: keys}}})
	if err != nil {
		return nil, err
	}
	if e := resp.GetError(); e != nil {
		return nil, refusal(e)
	}
	out := make(map[string]bool, len(keys))
	for _, k := range resp.GetCheckKeys().GetKeys() {
		out[k.GetKey()] = k.GetHasEntry()
	}
	return out, nil
}

// VSync implements [dict.SyncDirectory].
func (d directory) VSync(ctx context.Context, participant string, t dict.KeyType) (string, int64, error) {
	resp, err := d.ask(ctx, participant, "vsync/"+t.String(), &dictv1.DirectoryRequest{Operation: &dictv1.DirectoryRequest_GetVsync{
		GetVsync: &dictv1.DirGetVSync{KeyType: dictv1.KeyType(t)}}})
	if err != nil {
		return "", 0, err
	}
	if e := resp.GetError(); e != nil {
		return "", 0, refusal(e)
	}
	v := resp.GetVsync()
	if v == nil {
		return "", 0, dict.Internal("directory vsync", errors.New("answer without a vsync"))
	}
	if _, err := dict.CIDWords(v.GetVsync()); err != nil {
		return "", 0, dict.Internal("directory vsync", fmt.Errorf("malformed vsync: %w", err))
	}
	return v.GetVsync(), v.GetEntries(), nil
}

// ListCids implements [dict.SyncDirectory].
func (d directory) ListCids(ctx context.Context, participant string, t dict.KeyType) ([]dict.Entry, error) {
	resp, err := d.ask(ctx, participant, "cids/"+t.String(), &dictv1.DirectoryRequest{Operation: &dictv1.DirectoryRequest_ListCids{
		ListCids: &dictv1.DirListCids{KeyType: dictv1.KeyType(t)}}})
	if err != nil {
		return nil, err
	}
	if e := resp.GetError(); e != nil {
		return nil, refusal(e)
	}
	list := resp.GetCids()
	if list == nil {
		return nil, dict.Internal("directory cid list", errors.New("answer without a cid list"))
	}
	out := make([]dict.Entry, 0, len(list.GetEntries()))
	for _, c := range list.GetEntries() {
		if c.GetEntry() == nil {
			return nil, dict.Internal("directory cid list", errors.New("cid listed without its entry"))
		}
		e := dict.EntryFromProto(c.GetEntry())
		e.CID = c.GetCid()
		out = append(out, e)
	}
	return out, nil
}
