package dict

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/sqlc"
)

// EventContentType is the content type of the outbox rows dict writes: a
// serialised dict.v1.EventEnvelope.
const EventContentType = "application/x-protobuf; messageType=dict.v1.EventEnvelope"

// eventSchemaVersion is the EventEnvelope version dict writes.
const eventSchemaVersion = 1

// Proto returns the entry as its contract message.
func (e Entry) Proto() *dictv1.Entry {
	return &dictv1.Entry{
		KeyType: dictv1.KeyType(e.KeyType),
		Key:     e.Key,
		Account: &dictv1.Account{
			Participant: e.Account.Participant,
			Branch:      e.Account.Branch,
			Number:      e.Account.Number,
			Type:        dictv1.AccountType(e.Account.Type),
			OpenedAt:    protoTime(e.Account.OpenedAt),
		},
		Owner: &dictv1.Owner{
			Type:      dictv1.OwnerType(e.Owner.Type),
			TaxId:     e.Owner.TaxID,
			Name:      e.Owner.Name,
			TradeName: e.Owner.TradeName,
		},
		Status:           dictv1.EntryStatus(e.Status),
		CreatedAt:        protoTime(e.CreatedAt),
		KeyOwnedSince:    protoTime(e.KeyOwnedSince),
		UpdatedAt:        protoTime(e.UpdatedAt),
		Cid:              e.CID,
		RequestId:        e.RequestID.String(),
		FailureReason:    e.FailureReason,
		FailureMessage:   e.FailureMessage,
		PendingOperation: e.PendingOp,
	}
}

// EntryFromProto converts a contract entry (a directory's answer) to an
// [Entry]; the enums share their numbers.
func EntryFromProto(p *dictv1.Entry) Entry {
	e := Entry{
		KeyType: KeyType(p.GetKeyType()),
		Key:     p.GetKey(),
		Account: Account{
			Participant: p.GetAccount().GetParticipant(),
			Branch:      p.GetAccount().GetBranch(),
			Number:      p.GetAccount().GetNumber(),
			Type:        AccountType(p.GetAccount().GetType()),
		},
		Owner: Owner{
			Type:      OwnerType(p.GetOwner().GetType()),
			TaxID:     p.GetOwner().GetTaxId(),
			Name:      p.GetOwner().GetName(),
			TradeName: p.GetOwner().GetTradeName(),
		},
		Status:         EntryStatus(p.GetStatus()),
		CID:            p.GetCid(),
		FailureReason:  p.GetFailureReason(),
		FailureMessage: p.GetFailureMessage(),
		PendingOp:      p.GetPendingOperation(),
	}
	if t := p.GetAccount().GetOpenedAt(); t != nil {
		e.Account.OpenedAt = t.AsTime().UTC()
	}
	if t := p.GetCreatedAt(); t != nil {
		e.CreatedAt = t.AsTime().UTC()
	}
	if t := p.GetKeyOwnedSince(); t != nil {
		e.KeyOwnedSince = t.AsTime().UTC()
	}
	if t := p.GetUpdatedAt(); t != nil {
		e.UpdatedAt = t.AsTime().UTC()
	}
	if id, err := uuid.Parse(p.GetRequestId()); err == nil {
		e.RequestID = id
	}
	return e
}

func protoTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func cidAdded(cid string) *dictv1.CidEvent {
	return &dictv1.CidEvent{Type: dictv1.CidEventType_CID_EVENT_TYPE_ADDED, Cid: cid}
}

func cidRemoved(cid string) *dictv1.CidEvent {
	return &dictv1.CidEvent{Type: dictv1.CidEventType_CID_EVENT_TYPE_REMOVED, Cid: cid}
}

// emitEntry writes the event an entry's change implies to the outbox, in
// the change's transaction; the relay publishes it after commit, keyed by
// the PIX key so one key's events stay in order.
func (s *Service) emitEntry(ctx context.Context, q *sqlc.Queries, c Caller, e Entry, env *dictv1.EventEnvelope) error {
	id := uuid.New()
	now := s.now().UTC()
	env.EventId = id.String()
	env.AggregateId = e.Key
	env.AggregateType = "Entry"
	env.Participant = c.Participant
	env.OccurredAt = timestamppb.New(now)
	env.SchemaVersion = eventSchemaVersion
	b, err := proto.Marshal(env)
	if err != nil {
		return err
	}
	var tp pgtype.Text
	if s.traceParent != nil {
		if v := s.traceParent(ctx); v != "" {
			tp = pgtype.Text{String: v, Valid: true}
		}
	}
	return q.InsertOutbox(ctx, sqlc.InsertOutboxParams{
		ID: id, CreatedAt: now, Topic: s.topic, PartitionKey: e.Key, EventType: env.GetEventType(),
		AggregateType: "Entry", AggregateID: e.Key, Participant: c.Participant,
		ContentType: EventContentType, Payload: b, Traceparent: tp,
	})
}
