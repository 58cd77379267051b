package rpc

import (
	"context"
	"fmt"

	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// The claim RPCs: the caller's participant as claimer or donor. Every
// action answers with the claim as stored, its pending_operation set until
// the directory's answer applies it.

// maxClaimStatuses is how many values ListClaims' statuses filter may hold:
// one per claim status.
var maxClaimStatuses = len(dictv1.ClaimStatus_name) - 1

// CreateClaim implements dict.v1.CoreDictService.CreateClaim.
func (h *Handler) CreateClaim(ctx context.Context, req *dictv1.CreateClaimRequest) (*dictv1.CreateClaimResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := h.svc.CreateClaim(ctx, c, dict.CreateClaimInput{
		RequestID:      req.GetRequestId(),
		Type:           dict.ClaimType(req.GetType()),
		KeyType:        dict.KeyType(req.GetKeyType()),
		Key:            req.GetKey(),
		ClaimerAccount: accountIn(req.GetClaimerAccount()),
		Claimer:        ownerIn(req.GetClaimer()),
	})
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceCreateClaimProcedure, err)
	}
	return &dictv1.CreateClaimResponse{Claim: cl.Proto()}, nil
}

// GetClaim implements dict.v1.CoreDictService.GetClaim.
func (h *Handler) GetClaim(ctx context.Context, req *dictv1.GetClaimRequest) (*dictv1.GetClaimResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := h.svc.GetClaim(ctx, c, req.GetId())
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceGetClaimProcedure, err)
	}
	return &dictv1.GetClaimResponse{Claim: cl.Proto()}, nil
}

// ListClaims implements dict.v1.CoreDictService.ListClaims.
func (h *Handler) ListClaims(ctx context.Context, req *dictv1.ListClaimsRequest) (*dictv1.ListClaimsResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	in := dict.ListClaimsInput{AsDonor: req.GetAsDonor(), AsClaimer: req.GetAsClaimer(),
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken()}
	// Bounded input: there are five statuses, so more than five is a
	// repetition (or 10,000 of them), never a wider filter.
	if n := len(req.GetStatuses()); n > maxClaimStatuses {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceListClaimsProcedure, &dict.Error{Kind: dict.KindInvalid,
			Reason: dict.ReasonClaimInvalid, Field: "statuses", Msg: fmt.Sprintf("statuses lists %d values; at most %d, each status once", n, maxClaimStatuses)})
	}
	for _, st := range req.GetStatuses() {
		in.Statuses = append(in.Statuses, dict.ClaimStatus(st))
	}
	claims, next, err := h.svc.ListClaims(ctx, c, in)
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceListClaimsProcedure, err)
	}
	out := &dictv1.ListClaimsResponse{Claims: make([]*dictv1.Claim, len(claims)), NextPageToken: next}
	for i, cl := range claims {
		out.Claims[i] = cl.Proto()
	}
	return out, nil
}

// AcknowledgeClaim implements dict.v1.CoreDictService.AcknowledgeClaim.
func (h *Handler) AcknowledgeClaim(ctx context.Context, req *dictv1.AcknowledgeClaimRequest) (*dictv1.AcknowledgeClaimResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := h.svc.AcknowledgeClaim(ctx, c, req.GetId())
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceAcknowledgeClaimProcedure, err)
	}
	return &dictv1.AcknowledgeClaimResponse{Claim: cl.Proto()}, nil
}

// ConfirmClaim implements dict.v1.CoreDictService.ConfirmClaim.
func (h *Handler) ConfirmClaim(ctx context.Context, req *dictv1.ConfirmClaimRequest) (*dictv1.ConfirmClaimResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := h.svc.ConfirmClaim(ctx, c, req.GetId(), dict.Reason(req.GetReason()))
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceConfirmClaimProcedure, err)
	}
	return &dictv1.ConfirmClaimResponse{Claim: cl.Proto()}, nil
}

// CancelClaim implements dict.v1.CoreDictService.CancelClaim.
func (h *Handler) CancelClaim(ctx context.Context, req *dictv1.CancelClaimRequest) (*dictv1.CancelClaimResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := h.svc.CancelClaim(ctx, c, req.GetId(), dict.Reason(req.GetReason()))
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceCancelClaimProcedure, err)
	}
	return &dictv1.CancelClaimResponse{Claim: cl.Proto()}, nil
}

// CompleteClaim implements dict.v1.CoreDictService.CompleteClaim.
func (h *Handler) CompleteClaim(ctx context.Context, req *dictv1.CompleteClaimRequest) (*dictv1.CompleteClaimResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := h.svc.CompleteClaim(ctx, c, req.GetId(), req.GetRequestId())
	if err != nil {
		return nil, h.fail(ctx, dictv1connect.CoreDictServiceCompleteClaimProcedure, err)
	}
	return &dictv1.CompleteClaimResponse{Claim: cl.Proto()}, nil
}
