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

func entryOut(e dict.Entry) *dictv1.Entry { return e.Proto() }

func syncResultOut(r string) dictv1.SyncResult {
	switch r {
	case "MATCH":
		return dictv1.SyncResult_SYNC_RESULT_MATCH
	case "MISMATCH":
		return dictv1.SyncResult_SYNC_RESULT_MISMATCH
	case "REPAIRED":
		return dictv1.SyncResult_SYNC_RESULT_REPAIRED
	default:
		return dictv1.SyncResult_SYNC_RESULT_NOT_CHECKED
	}
}
