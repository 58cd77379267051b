package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The tests of Setup change otel's globals and the environment: they do not run in parallel.

// otelVars are the variables Setup reads; each test starts from all of them empty.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}

func clearOTel(t *testing.T) {
	for _, v := range otelVars {
		t.Setenv(v, "")
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestSetupRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"OTEL_SDK_DISABLED", "maybe"},
		{"OTEL_TRACES_EXPORTER", "zipkin"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"},
		{"OTEL_TRACES_SAMPLER", "sometimes"},
		{"OTEL_TRACES_SAMPLER_ARG", "1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTel(t)
			t.Setenv(tc.name, tc.value)
			if tc.name == "OTEL_TRACES_SAMPLER_ARG" {
				t.Setenv("OTEL_TRACES_SAMPLER", "traceidratio")
			}
			_, _, err := Setup(context.Background(), "core-dict", quiet())
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.name, tc.value)
			}
			if !strings.HasPrefix(err.Error(), tc.name+"=") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q does not open with %s= on one line", err, tc.name)
			}
		})
	}
}

func TestSetupWithoutEndpointTracesNothing(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
	} {
		clearOTel(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		tp, shutdown, err := Setup(context.Background(), "core-dict", quiet())
		if err != nil {
			t.Fatal(err)
		}
		_, span := tp.Tracer("test").Start(context.Background(), "x")
		if span.IsRecording() {
			t.Errorf("env %v: spans are recorded, want a no-op provider", env)
		}
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

// TestSetupExportsOTLP: with an endpoint, spans reach it over OTLP/HTTP on shutdown at the latest, under
// OTEL_SERVICE_NAME (else the default name), and the provider is otel's global one.
func TestSetupExportsOTLP(t *testing.T) {
	for _, tc := range []struct{ envName, want string }{{"", "core-dict"}, {"core-dict-a", "core-dict-a"}} {
		clearOTel(t)
		var mu sync.Mutex
		var got []*coltracepb.ExportTraceServiceRequest
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			req := new(coltracepb.ExportTraceServiceRequest)
			if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
				t.Errorf("collector got %s %s (%d bytes), want an OTLP/HTTP protobuf export on /v1/traces", r.Method, r.URL.Path, len(body))
			}
			mu.Lock()
			got = append(got, req)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/x-protobuf")
			b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
			w.Write(b)
		}))
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
		t.Setenv("OTEL_SERVICE_NAME", tc.envName)
		_, shutdown, err := Setup(context.Background(), "core-dict", quiet())
		if err != nil {
			t.Fatal(err)
		}
		_, span := otel.Tracer("test").Start(context.Background(), "the-span")
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		mu.Lock()
		var names []string
		service := ""
		for _, req := range got {
			for _, rs := range req.GetResourceSpans() {
				for _, kv := range rs.GetResource().GetAttributes() {
					if kv.GetKey() == "service.name" {
						service = kv.GetValue().GetStringValue()
					}
				}
				for _, ss := range rs.GetScopeSpans() {
					for _, s := range ss.GetSpans() {
						names = append(names, s.GetName())
					}
				}
			}
		}
		mu.Unlock()
		if len(names) != 1 || names[0] != "the-span" {
			t.Errorf("OTEL_SERVICE_NAME=%q: exported spans %v, want [the-span]", tc.envName, names)
		}
		if service != tc.want {
			t.Errorf("OTEL_SERVICE_NAME=%q: service.name %q, want %q", tc.envName, service, tc.want)
		}
	}
}
