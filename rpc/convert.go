package rpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// The proto enums and the dict enums share their numbers, so conversion is
// a cast; values outside the known range stay out of range and dict's
// validation refuses them with a message naming the field.

func accountIn(a *dictv1.Account) dict.Account {
	if a == nil {
		return dict.Account{}
	}
	return dict.Account{
		Participant: a.GetParticipant(),
		Branch:      a.GetBranch(),
		Number:      a.GetNumber(),
		Type:        dict.AccountType(a.GetType()),
		OpenedAt:    timeIn(a.GetOpenedAt()),
	}
}

func ownerIn(o *dictv1.Owner) dict.Owner {
	if o == nil {
		return dict.Owner{}
	}
	return dict.Owner{
		Type:      dict.OwnerType(o.GetType()),
		TaxID:     o.GetTaxId(),
		Name:      o.GetName(),
		TradeName: o.GetTradeName(),
	}
}

func timeIn(t *timestamppb.Timestamp) time.Time {
	if t == nil || !t.IsValid() {
		return time.Time{}
	}
	return t.AsTime()
}

func timeOut(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func entryOut(e dict.Entry) *dictv1.Entry {
	return &dictv1.Entry{
		KeyType: dictv1.KeyType(e.KeyType),
		Key:     e.Key,
		Account: &dictv1.Account{
			Participant: e.Account.Participant,
			Branch:      e.Account.Branch,
			Number:      e.Account.Number,
			Type:        dictv1.AccountType(e.Account.Type),
			OpenedAt:    timeOut(e.Account.OpenedAt),
		},
		Owner: &dictv1.Owner{
			Type:      dictv1.OwnerType(e.Owner.Type),
			TaxId:     e.Owner.TaxID,
			Name:      e.Owner.Name,
			TradeName: e.Owner.TradeName,
		},
		Status:        dictv1.EntryStatus(e.Status),
		CreatedAt:     timeOut(e.CreatedAt),
		KeyOwnedSince: timeOut(e.KeyOwnedSince),
		UpdatedAt:     timeOut(e.UpdatedAt),
		Cid:           e.CID,
		RequestId:     e.RequestID.String(),
	}
}

func syncResultOut(r string) dictv1.SyncResult {
	switch r {
	case "MATCH":
		return dictv1.SyncResult_SYNC_RESULT_MATCH
	case "MISMATCH":
		return dictv1.SyncResult_SYNC_RESULT_MISMATCH
	default:
		return dictv1.SyncResult_SYNC_RESULT_NOT_CHECKED
	}
}
