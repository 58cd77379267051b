// Package rpc serves core-dict's contract (dict.v1.CoreDictService) over
// Connect, gRPC and gRPC-Web. It is thin: decode, call dict, map errors,
// encode. Business rules live in dict; if a handler holds one, it is in the
// wrong place.
package rpc

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// Handler implements [dictv1connect.CoreDictServiceHandler] over a
// [dict.Service].
type Handler struct {
	svc    *dict.Service
	logger *slog.Logger
}

var _ dictv1connect.CoreDictServiceHandler = (*Handler)(nil)

// NewHandler returns a [Handler] calling svc.
func NewHandler(svc *dict.Service, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return &Handler{svc: svc, logger: logger}
}

// caller is the participant and subject the authenticated token acts for.
// The auth interceptor runs before every handler, so a missing principal is
// a wiring bug and is refused rather than served unscoped.
func caller(ctx context.Context) (dict.Caller, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok || p.Participant == "" {
		return dict.Caller{}, connect.NewError(connect.CodeUnauthenticated, errors.New("no authenticated caller"))
	}
	noteCaller(ctx, p)
	return dict.Caller{Participant: p.Participant, Subject: p.Subject}, nil
}

func (h *Handler) fail(ctx context.Context, procedure string, err error) error {
	return toConnect(ctx, h.logger, procedure, err)
}

// CreateKey implements dict.v1.CoreDictService.CreateKey.
func (h *Handler) CreateKey(ctx context.Context, req *dictv1.CreateKeyRequest) (*dictv1.CreateKeyResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.svc.CreateKey(ctx, c, dict.CreateKeyInput{
		RequestID: req.GetRequestId(),
		KeyType:   dict.KeyType(req.GetKeyType()),
		Key:       req.GetKey(),
		Account:   accountIn(req.GetAccount()),
		Owner:     ownerIn(req.GetOwner()),
	})
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceCreateKeyProcedure, err)
	}
	return &dictv1.CreateKeyResponse{Entry: entryOut(e)}, nil
}

// GetKey implements dict.v1.CoreDictService.GetKey.
func (h *Handler) GetKey(ctx context.Context, req *dictv1.GetKeyRequest) (*dictv1.GetKeyResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.svc.GetKey(ctx, c, dict.KeyType(req.GetKeyType()), req.GetKey())
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceGetKeyProcedure, err)
	}
	return &dictv1.GetKeyResponse{Entry: entryOut(e)}, nil
}

// ListKeys implements dict.v1.CoreDictService.ListKeys.
func (h *Handler) ListKeys(ctx context.Context, req *dictv1.ListKeysRequest) (*dictv1.ListKeysResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	in := dict.ListKeysInput{OwnerTaxID: req.GetOwnerTaxId(), PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken()}
	if req.GetAccount() != nil {
		a := accountIn(req.GetAccount())
		in.Account = &a
	}
	entries, next, err := h.svc.ListKeys(ctx, c, in)
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceListKeysProcedure, err)
	}
	out := &dictv1.ListKeysResponse{Entries: make([]*dictv1.Entry, len(entries)), NextPageToken: next}
	for i, e := range entries {
		out.Entries[i] = entryOut(e)
	}
	return out, nil
}

// UpdateKey implements dict.v1.CoreDictService.UpdateKey.
func (h *Handler) UpdateKey(ctx context.Context, req *dictv1.UpdateKeyRequest) (*dictv1.UpdateKeyResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.svc.UpdateKey(ctx, c, dict.UpdateKeyInput{
		RequestID: req.GetRequestId(),
		KeyType:   dict.KeyType(req.GetKeyType()),
		Key:       req.GetKey(),
		Account:   accountIn(req.GetAccount()),
		Owner:     ownerIn(req.GetOwner()),
		Reason:    dict.Reason(req.GetReason()),
	})
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceUpdateKeyProcedure, err)
	}
	return &dictv1.UpdateKeyResponse{Entry: entryOut(e)}, nil
}

// DeleteKey implements dict.v1.CoreDictService.DeleteKey.
func (h *Handler) DeleteKey(ctx context.Context, req *dictv1.DeleteKeyRequest) (*dictv1.DeleteKeyResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.svc.DeleteKey(ctx, c, dict.DeleteKeyInput{
		RequestID: req.GetRequestId(),
		KeyType:   dict.KeyType(req.GetKeyType()),
		Key:       req.GetKey(),
		Reason:    dict.Reason(req.GetReason()),
	})
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceDeleteKeyProcedure, err)
	}
	return &dictv1.DeleteKeyResponse{Entry: entryOut(e)}, nil
}

// LookupKey implements dict.v1.CoreDictService.LookupKey.
func (h *Handler) LookupKey(ctx context.Context, req *dictv1.LookupKeyRequest) (*dictv1.LookupKeyResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, pv, err := h.svc.LookupKey(ctx, c, dict.LookupInput{
		KeyType:    dict.KeyType(req.GetKeyType()),
		Key:        req.GetKey(),
		PayerID:    req.GetPayerId(),
		EndToEndID: req.GetEndToEndId(),
	})
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceLookupKeyProcedure, err)
	}
	return &dictv1.LookupKeyResponse{
		Entry: entryOut(e),
		PayerView: &dictv1.PayerView{
			Key:             pv.Key,
			Name:            pv.Name,
			TradeName:       pv.TradeName,
			TaxIdMasked:     pv.TaxIDMasked,
			ParticipantName: pv.ParticipantName,
		},
	}, nil
}

// CheckKeys implements dict.v1.CoreDictService.CheckKeys.
func (h *Handler) CheckKeys(ctx context.Context, req *dictv1.CheckKeysRequest) (*dictv1.CheckKeysResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	res, err := h.svc.CheckKeys(ctx, c, req.GetKeys())
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceCheckKeysProcedure, err)
	}
	out := &dictv1.CheckKeysResponse{Keys: make([]*dictv1.KeyExistence, len(res))}
	for i, r := range res {
		out.Keys[i] = &dictv1.KeyExistence{Key: r.Key, HasEntry: r.HasEntry}
	}
	return out, nil
}

// CreditPayment implements dict.v1.CoreDictService.CreditPayment.
func (h *Handler) CreditPayment(ctx context.Context, req *dictv1.CreditPaymentRequest) (*dictv1.CreditPaymentResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	ok, err := h.svc.CreditPayment(ctx, c, req.GetPayerId(), req.GetEndToEndId())
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceCreditPaymentProcedure, err)
	}
	return &dictv1.CreditPaymentResponse{Credited: ok}, nil
}

// GetSyncStatus implements dict.v1.CoreDictService.GetSyncStatus.
func (h *Handler) GetSyncStatus(ctx context.Context, _ *dictv1.GetSyncStatusRequest) (*dictv1.GetSyncStatusResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	res, err := h.svc.GetSyncStatus(ctx, c)
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceGetSyncStatusProcedure, err)
	}
	out := &dictv1.GetSyncStatusResponse{Statuses: make([]*dictv1.SyncStatus, len(res))}
	for i, s := range res {
		out.Statuses[i] = &dictv1.SyncStatus{
			KeyType:    dictv1.KeyType(s.KeyType),
			Vsync:      s.VSync,
			EntryCount: s.EntryCount,
			LastCheck:  timeOut(s.LastCheck),
			Result:     syncResultOut(s.Result),
		}
	}
	return out, nil
}
