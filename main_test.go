package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
)

func TestLoadConfigRefusesBadValues(t *testing.T) {
	for _, test := range []struct {
		name, value, wantVar string
	}{
		{"GRPC_PORT", "http", "GRPC_PORT"},
		{"GRPC_PORT", "70000", "GRPC_PORT"},
		{"METRICS_PORT", "-1", "METRICS_PORT"},
		{"HTTP_READ_TIMEOUT", "10", "HTTP_READ_TIMEOUT"},
		{"SHUTDOWN_TIMEOUT", "-5s", "SHUTDOWN_TIMEOUT"},
		{"DICT_PARTICIPANTS", "12345678,abc", "DICT_PARTICIPANTS"},
		{"DICT_PARTICIPANT_NAMES", "Banco", "DICT_PARTICIPANT_NAMES"},
		{"LOG_LEVEL", "loud", "LOG_LEVEL"},
		{"MAX_REQUEST_BYTES", "10", "MAX_REQUEST_BYTES"},
		{"CORS_ALLOWED_ORIGINS", "console.example.com", "CORS_ALLOWED_ORIGINS"},
		{"CORS_ALLOWED_ORIGINS", "https://console.example.com/app", "CORS_ALLOWED_ORIGINS"},
		{"OUTBOX_LINGER", "2s", "OUTBOX_LINGER"},
		{"OUTBOX_LINGER", "-1ms", "OUTBOX_LINGER"},
	} {
		t.Run(test.name+"="+test.value, func(t *testing.T) {
			t.Setenv(test.name, test.value)
			_, err := loadConfig()
			if err == nil {
				t.Fatalf("%s=%q accepted", test.name, test.value)
			}
			if !strings.HasPrefix(err.Error(), test.wantVar) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q does not open with %s on one line", err, test.wantVar)
			}
		})
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Setenv("DICT_PARTICIPANTS", " 12345678 , 87654321 ")
	t.Setenv("DICT_PARTICIPANT_NAMES", "12345678=Banco A")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCPort != 9090 || c.MetricsPort != 9091 {
		t.Errorf("ports = %d, %d; want 9090, 9091", c.GRPCPort, c.MetricsPort)
	}
	if len(c.Participants) != 2 || c.Participants[1] != "87654321" {
		t.Errorf("participants = %v", c.Participants)
	}
	if c.ParticipantNames["12345678"] != "Banco A" {
		t.Errorf("names = %v", c.ParticipantNames)
	}
	if c.OutboxLinger != eventbus.DefaultOutboxLinger {
		t.Errorf("outbox linger = %s, want %s", c.OutboxLinger, eventbus.DefaultOutboxLinger)
	}
	t.Setenv("OUTBOX_LINGER", "0")
	if c, err = loadConfig(); err != nil || c.OutboxLinger != 0 {
		t.Errorf("OUTBOX_LINGER=0: linger %s, err %v; want 0 (no linger)", c.OutboxLinger, err)
	}
}

func TestOpsEndpoints(t *testing.T) {
	ctx := context.Background()
	db, err := testdb.Create(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	rpc.NewMetrics(reg)
	svc := dict.NewService(dict.ServiceConfig{Pool: db.App})
	srv := httptest.NewServer(opsMux(reg, svc))
	defer srv.Close()
	for _, test := range []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/healthz", http.StatusOK, "ok"},
		{"/readyz", http.StatusOK, "ready"},
		{"/metrics", http.StatusOK, "rpc_server_in_flight"},
	} {
		res, err := http.Get(srv.URL + test.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != test.wantCode || !strings.Contains(string(body), test.wantBody) {
			t.Errorf("GET %s = %d %q, want %d containing %q", test.path, res.StatusCode, body, test.wantCode, test.wantBody)
		}
	}
	// With the database gone, the process is alive but not ready.
	db.App.Close()
	res, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the pool closed = %d, want 503", res.StatusCode)
	}
}

// TestServiceRoleCheck: serve refuses a DATABASE_URL whose role row-level
// security does not apply to (the tables' owner), and accepts the
// service's role.
func TestServiceRoleCheck(t *testing.T) {
	ctx := context.Background()
	db, err := testdb.Create(ctx, "mainrole")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := checkServiceRole(ctx, db.Pool); err == nil || !strings.Contains(err.Error(), "bypasses row-level security") {
		t.Errorf("owner's pool: err = %v, want a refusal", err)
	}
	if err := checkServiceRole(ctx, db.App); err != nil {
		t.Errorf("service role's pool: %v", err)
	}
}
