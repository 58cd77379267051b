package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
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

// maxDecodeDetail bounds the part of a decoding error a client gets back:
// protojson quotes the offending input, which may be a 10 KB string.
const maxDecodeDetail = 160

// Request codecs: Connect's own, with errors that name the message by its
// proto name and never the Go type Connect's codecs print
// ("unmarshal into *dictv1.CreateKeyRequest: ...").
type (
	protoCodec struct{}
	jsonCodec  struct{ name string }
)

// codecs replaces Connect's proto and JSON codecs (names "proto", "json"
// and "json; charset=utf-8") with [protoCodec] and [jsonCodec].
func codecs() connect.HandlerOption {
	return connect.WithHandlerOptions(
		connect.WithCodec(protoCodec{}),
		connect.WithCodec(jsonCodec{"json"}),
		connect.WithCodec(jsonCodec{"json; charset=utf-8"}),
	)
}

func (protoCodec) Name() string   { return "proto" }
func (protoCodec) IsBinary() bool { return true }

func (protoCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotMessage
	}
	return proto.Marshal(pm)
}

func (protoCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotMessage
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (protoCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errNotMessage
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return decodeError("protobuf", pm, err)
	}
	return nil
}

func (c jsonCodec) Name() string { return c.name }
func (jsonCodec) IsBinary() bool { return false }

func (jsonCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotMessage
	}
	return protojson.Marshal(pm)
}

func (jsonCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotMessage
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (jsonCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errNotMessage
	}
	if len(data) == 0 {
		return errors.New("empty body: a request is a JSON object, {} at least")
	}
	// Unknown fields are ignored, as Connect's own codec does, so that
	// clients of a newer contract keep working.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, pm); err != nil {
		return decodeError("JSON", pm, err)
	}
	return nil
}

var errNotMessage = errors.New("not a protobuf message")

// decodeError says which message could not be decoded and why, in
// protobuf's words without its "proto:" prefix, bounded and valid UTF-8.
func decodeError(format string, m proto.Message, err error) error {
	detail := err.Error()
	for _, p := range []string{"proto:", "protojson:"} {
		detail = strings.TrimSpace(strings.TrimPrefix(detail, p))
	}
	detail = strings.ToValidUTF8(detail, "?")
	if len(detail) > maxDecodeDetail {
		cut := maxDecodeDetail
		for cut > 0 && !utf8.RuneStart(detail[cut]) {
			cut--
		}
		detail = detail[:cut] + "..."
	}
	return fmt.Errorf("invalid %s for %s: %s", format, m.ProtoReflect().Descriptor().FullName(), detail)
}
