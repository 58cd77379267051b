package rpc

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lbpay-lab/core-dict/dict"
)

// ErrorDomain is the ErrorInfo domain of every error core-dict returns.
const ErrorDomain = "dict.pi.rsfn.net.br"

// codeOf is the one table mapping a domain error kind to a wire code.
var codeOf = map[dict.Kind]connect.Code{
	dict.KindInvalid:          connect.CodeInvalidArgument,
	dict.KindNotFound:         connect.CodeNotFound,
	dict.KindConflict:         connect.CodeAlreadyExists,
	dict.KindPrecondition:     connect.CodeFailedPrecondition,
	dict.KindRateLimited:      connect.CodeResourceExhausted,
	dict.KindUnavailable:      connect.CodeUnavailable,
	dict.KindPermissionDenied: connect.CodePermissionDenied,
	dict.KindUnimplemented:    connect.CodeUnimplemented,
	dict.KindInternal:         connect.CodeInternal,
}

// toConnect converts a domain error to a Connect error with the details
// API.md promises: ErrorInfo always, BadRequest for invalid input, RetryInfo
// when rate limited. Internal causes are logged, never returned.
func toConnect(ctx context.Context, logger *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	var de *dict.Error
	if !errors.As(err, &de) {
		if errors.Is(err, context.Canceled) {
			return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request deadline exceeded"))
		}
		de = dict.Internal(procedure, err)
	}
	code, ok := codeOf[de.Kind]
	if !ok {
		code = connect.CodeInternal
	}
	msg := de.Msg
	if de.Field != "" {
		msg = de.Field + ": " + de.Msg
	}
	if code == connect.CodeInternal || code == connect.CodeUnavailable {
		logger.ErrorContext(ctx, "request failed", "procedure", procedure, "kind", de.Kind.String(), "err", de.Error())
	}
	if code == connect.CodeInternal {
		msg = "internal error"
	}
	out := connect.NewError(code, errors.New(msg))
	info := &errdetails.ErrorInfo{Reason: de.Reason, Domain: ErrorDomain}
	if de.Field != "" {
		info.Metadata = map[string]string{"field": de.Field}
	}
	addDetail(out, info)
	if code == connect.CodeInvalidArgument {
		br := &errdetails.BadRequest{}
		if len(de.Violations) > 0 {
			for _, v := range de.Violations {
				br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Rule})
			}
		} else {
			br.FieldViolations = []*errdetails.BadRequest_FieldViolation{{Field: de.Field, Description: de.Msg}}
		}
		addDetail(out, br)
	}
	if code == connect.CodeResourceExhausted {
		addDetail(out, &errdetails.RetryInfo{RetryDelay: durationpb.New(de.RetryAfter)})
	}
	return out
}

func addDetail(e *connect.Error, m proto.Message) {
	if d, err := connect.NewErrorDetail(m); err == nil {
		e.AddDetail(d)
	}
}
