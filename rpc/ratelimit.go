package rpc

import (
	"context"
	"errors"
	"net"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
)

// RequestLimiter decides whether a request may go ahead given its keys,
// in order: the caller's IP, then its account (participant and subject).
// cachelayer's MultiKeyLimiter over the per-IP and per-account GCRA
// limiters is the production one.
type RequestLimiter interface {
	Decide(ctx context.Context, keys ...string) (cachelayer.Decision, error)
}

// RateLimitInterceptor refuses requests beyond the per-IP and per-account
// rates with RESOURCE_EXHAUSTED and a RetryInfo detail. It runs after
// authentication, so the account is the authenticated one. A limiter
// failure lets the request through (the limiters fall back in process on
// their own; an error here is a bug, not an outage) and is logged.
func RateLimitInterceptor(l RequestLimiter) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			ip := req.Peer().Addr
			if host, _, err := net.SplitHostPort(ip); err == nil {
				ip = host
			}
			account := "anonymous"
			if p, ok := PrincipalFrom(ctx); ok {
				account = p.Participant + ":" + p.Subject
			}
			d, err := l.Decide(ctx, "ip:"+ip, "account:"+account)
			if err == nil && !d.Allowed {
				e := connect.NewError(connect.CodeResourceExhausted, errors.New("too many requests; retry after "+d.RetryAfter.String()))
				addDetail(e, &errdetails.ErrorInfo{Reason: dict.ReasonRateLimited, Domain: ErrorDomain})
				addDetail(e, &errdetails.RetryInfo{RetryDelay: durationpb.New(d.RetryAfter)})
				return nil, e
			}
			return next(ctx, req)
		}
	}
}
