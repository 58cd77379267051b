package rpc

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lbpay-lab/core-dict/internal/logmask"
)

// TestRecoverHTTP covers the outermost net, for panics outside Connect's
// interceptors: an answer in the request's protocol when nothing was
// written, an aborted response when something was, and net/http's own
// ErrAbortHandler passed through.
func TestRecoverHTTP(t *testing.T) {
	var logs lockedBuffer
	m := NewMetrics(prometheus.NewRegistry())
	logger := logmask.Logger(slog.New(slog.NewJSONHandler(&logs, nil)))
	h := recoverHTTP(logger, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/before":
			panic("before writing, tax id 12345678909")
		case "/after":
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic("after writing")
		case "/abort":
			panic(http.ErrAbortHandler)
		}
	}))
	s := httptest.NewServer(h)
	for _, test := range []struct {
		name, ct   string
		wantStatus int
		wantHeader string // Grpc-Status
		wantBody   string
	}{
		{"Connect", "application/json", http.StatusInternalServerError, "", `{"code":"internal","message":"internal error"}`},
		{"gRPC", "application/grpc", http.StatusOK, "13", ""},
		{"gRPC-Web", "application/grpc-web+proto", http.StatusOK, "13", ""},
	} {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/before", strings.NewReader("x"))
		req.Header.Set("Content-Type", test.ct)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", test.name, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != test.wantStatus || res.Header.Get("Grpc-Status") != test.wantHeader || string(body) != test.wantBody {
			t.Errorf("%s: %d grpc-status %q body %q", test.name, res.StatusCode, res.Header.Get("Grpc-Status"), body)
		}
	}
	for _, path := range []string{"/after", "/abort"} {
		res, err := http.Get(s.URL + path)
		if err == nil {
			body, rerr := io.ReadAll(res.Body)
			res.Body.Close()
			if rerr == nil {
				t.Errorf("%s: the response completed: %d %q", path, res.StatusCode, body)
			}
		}
	}
	s.Close() // waits for the handlers, and their logs
	if got := testutil.ToFloat64(m.panics); got != 4 {
		t.Errorf("panics counted = %v, want 4 (ErrAbortHandler is not one)", got)
	}
	out := logs.String()
	if strings.Count(out, `"msg":"panic recovered"`) != 4 || !strings.Contains(out, "recover_test.go") {
		t.Errorf("panic logs:\n%s", out)
	}
	if strings.Contains(out, "12345678909") {
		t.Errorf("the raw tax id reached the log:\n%s", out)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
