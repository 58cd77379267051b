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

// KeyLimiter decides whether one more request of key may go ahead, and
// counts it when it may: cachelayer's per-IP and per-account GCRA limiters
// (redis_rate's algorithm in Redis) are the production ones.
type KeyLimiter interface {
	Decide(ctx context.Context, key string) (cachelayer.Decision, error)
}

// ipRateLimit refuses requests beyond the per-IP rate, keyed "ip:<host>".
// [NewMux] runs it before authentication, so that a flood of requests with
// forged or expired tokens is refused before any of them is verified, and
// every request an address sends counts, whatever its token.
func ipRateLimit(l KeyLimiter) connect.UnaryInterceptorFunc {
	return rateLimit(l, func(_ context.Context, req connect.AnyRequest) string {
		ip := req.Peer().Addr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		return "ip:" + ip
	})
}

// accountRateLimit refuses requests beyond the per-account rate, keyed
// "account:<participant>:<subject>" of the authenticated caller. [NewMux]
// runs it after authentication.
func accountRateLimit(l KeyLimiter) connect.UnaryInterceptorFunc {
	return rateLimit(l, func(ctx context.Context, _ connect.AnyRequest) string {
		account := "anonymous"
		if p, ok := PrincipalFrom(ctx); ok {
			account = p.Participant + ":" + p.Subject
		}
		return "account:" + account
	})
}

// rateLimit refuses with RESOURCE_EXHAUSTED, reason RateLimited and a
// RetryInfo what l refuses. A limiter failure lets the request through (the
// limiters fall back in process on their own; an error here is a bug, not
// an outage).
func rateLimit(l KeyLimiter, key func(context.Context, connect.AnyRequest) string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			d, err := l.Decide(ctx, key(ctx, req))
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
