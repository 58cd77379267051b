package rpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/lbpay-lab/core-dict/rpc"
)

const (
	getKeyProcedure  = "/dict.v1.CoreDictService/GetKey"
	unknownProcedure = "/dict.v1.CoreDictService/NotInTheTable"
	ispb             = "12345678"
)

var (
	testSecret  = []byte("0123456789abcdef0123456789abcdef")
	otherSecret = []byte("fedcba9876543210fedcba9876543210")
	// testNow is the authenticator's clock in these tests, so expiry cases are
	// exact instead of racing the wall clock.
	testNow = time.Date(2026, time.March, 10, 12, 0, 0, 0, time.UTC)
)

// testKeys are generated once: RSA generation is slow enough to matter
// when every parallel test does it.
var testKeys = sync.OnceValue(func() keys {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return keys{rsa: r, ec: e}
})

type keys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

// claims builds the claims of a token valid at testNow; edit the map to break
// it.
func claims(scope string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":   "svc-payments",
		"ispb":  ispb,
		"scope": scope,
		"aud":   "core-dict",
		"iat":   testNow.Add(-time.Minute).Unix(),
		"exp":   testNow.Add(time.Hour).Unix(),
	}
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, c jwt.MapClaims, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// unknownAlgToken is an HS256 token relabelled with an algorithm jwt does not
// know.
func unknownAlgToken(t *testing.T) string {
	t.Helper()
	header := b64([]byte(`{"alg":"XS999","typ":"JWT"}`))
	payload, err := json.Marshal(claims("dict.read"))
	if err != nil {
		t.Fatal(err)
	}
	return header + "." + b64(payload) + "." + b64([]byte("sig"))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// writeJWKS writes a JWK Set with the test RSA key as "rsa-1", the EC key as
// "ec-1", and an Ed25519 key the service must skip.
func writeJWKS(t *testing.T, k keys) string {
	t.Helper()
	ecBytes, err := k.ec.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
			"n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(ecBytes[1:33]), "y": b64(ecBytes[33:])},
		{"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(make([]byte, 32))},
	}}
	return writeFile(t, set)
}

func writeFile(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newClients serves GetKey and a procedure missing from the scope table behind
// the authenticator, each echoing the principal in response headers.
func newClients(t *testing.T, cfg rpc.AuthConfig) map[string]*connect.Client[emptypb.Empty, emptypb.Empty] {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	auth, err := rpc.NewAuthenticator(cfg)
	if err != nil {
		t.Fatalf("NewAuthenticator: %v", err)
	}
	mux := http.NewServeMux()
	for _, proc := range []string{getKeyProcedure, unknownProcedure} {
		mux.Handle(proc, connect.NewUnaryHandler(proc,
			func(ctx context.Context, _ *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
				p, ok := rpc.PrincipalFrom(ctx)
				if !ok {
					return nil, connect.NewError(connect.CodeInternal, errors.New("no principal"))
				}
				res := connect.NewResponse(&emptypb.Empty{})
				res.Header().Set("X-Subject", p.Subject)
				res.Header().Set("X-Participant", p.Participant)
				res.Header().Set("X-Scopes", strings.Join(p.Scopes, " "))
				return res, nil
			},
			connect.WithInterceptors(auth.Interceptor()),
		))
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return map[string]*connect.Client[emptypb.Empty, emptypb.Empty]{
		getKeyProcedure:  connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+getKeyProcedure),
		unknownProcedure: connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+unknownProcedure),
	}
}

type principalHeaders struct {
	Subject, Participant, Scopes string
}

func TestInterceptor(t *testing.T) {
	t.Parallel()
	k := testKeys()
	jwks := writeJWKS(t, k)
	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	secretOnly := rpc.AuthConfig{HS256Secret: testSecret}
	jwksOnly := rpc.AuthConfig{JWKSFile: jwks}
	both := rpc.AuthConfig{HS256Secret: testSecret, JWKSFile: jwks}
	served := rpc.AuthConfig{HS256Secret: testSecret, Participants: []string{"87654321", " " + ispb, ""}}
	notServed := rpc.AuthConfig{HS256Secret: testSecret, Participants: []string{"87654321"}}
	withLeeway := rpc.AuthConfig{HS256Secret: testSecret, Leeway: 2 * time.Minute}

	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, "", c, testSecret) }
	edit := func(c jwt.MapClaims, f func(jwt.MapClaims)) jwt.MapClaims { f(c); return c }
	noneToken := sign(t, jwt.SigningMethodNone, "", claims("dict.read"), jwt.UnsafeAllowNoneSignatureType)

	for _, test := range []struct {
		name      string
		cfg       rpc.AuthConfig
		procedure string // default GetKey
		header    []string
		token     string // sent as "Bearer <token>" unless header is set
		wantCode  connect.Code
		wantMsg   string // substring of the error message
		wantInfo  *errdetails.ErrorInfo
		want      principalHeaders
	}{
		{
			name:     "no header",
			cfg:      secretOnly,
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "missing Authorization",
			wantInfo: &errdetails.ErrorInfo{Reason: "Unauthenticated", Domain: "dict.pi.rsfn.net.br"},
		},
		{
			name:     "basic scheme",
			cfg:      secretOnly,
			header:   []string{"Basic dXNlcjpwYXNz"},
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "Bearer",
		},
		{
			name:     "bearer without token",
			cfg:      secretOnly,
			header:   []string{"Bearer "},
			wantCode: connect.CodeUnauthenticated,
		},
		{
			name:     "two authorization headers",
			cfg:      secretOnly,
			header:   []string{"Bearer " + hs(claims("dict.read")), "Bearer " + hs(claims("dict.admin"))},
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "more than one",
		},
		{
			name:     "header too large",
			cfg:      secretOnly,
			token:    strings.Repeat("a", 9<<10),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "longer than",
		},
		{
			name:     "garbage token",
			cfg:      secretOnly,
			token:    "not.a.jwt-at-all",
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "malformed",
		},
		{
			name:     "wrong signature",
			cfg:      secretOnly,
			token:    sign(t, jwt.SigningMethodHS256, "", claims("dict.read"), otherSecret),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "signature is invalid",
			wantInfo: &errdetails.ErrorInfo{Reason: "Unauthenticated", Domain: "dict.pi.rsfn.net.br"},
		},
		{
			name:     "expired",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["exp"] = testNow.Add(-time.Second).Unix() })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "expired",
		},
		{
			name:  "expired within leeway",
			cfg:   withLeeway,
			token: hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["exp"] = testNow.Add(-time.Minute).Unix() })),
			want:  principalHeaders{"svc-payments", ispb, "dict.read"},
		},
		{
			name:     "no exp",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { delete(c, "exp") })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "no exp",
		},
		{
			name:     "not valid yet",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["nbf"] = testNow.Add(time.Minute).Unix() })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "not valid yet",
		},
		{
			name:     "issued in the future",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["iat"] = testNow.Add(time.Minute).Unix() })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "future",
		},
		{
			name:     "wrong audience",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["aud"] = []string{"core-bank", "other"} })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  `audience does not include "core-dict"`,
		},
		{
			name:     "no audience",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { delete(c, "aud") })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "no aud",
		},
		{
			name:  "audience among several",
			cfg:   secretOnly,
			token: hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["aud"] = []string{"other", "core-dict"} })),
			want:  principalHeaders{"svc-payments", ispb, "dict.read"},
		},
		{
			name:     "no sub",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { delete(c, "sub") })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "no sub",
		},
		{
			name:     "no ispb",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { delete(c, "ispb") })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "ispb",
		},
		{
			name:     "ispb not 8 digits",
			cfg:      secretOnly,
			token:    hs(edit(claims("dict.read"), func(c jwt.MapClaims) { c["ispb"] = "1234567x" })),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "8-digit",
		},
		{
			name:     "alg none",
			cfg:      secretOnly,
			token:    noneToken,
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "algorithm none is not accepted",
		},
		{
			name:     "alg none with jwks",
			cfg:      both,
			token:    noneToken,
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "algorithm none is not accepted",
		},
		{
			name:     "unknown alg",
			cfg:      secretOnly,
			token:    unknownAlgToken(t),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "cannot be verified",
		},
		{
			name:     "HS512 token",
			cfg:      secretOnly,
			token:    sign(t, jwt.SigningMethodHS512, "", claims("dict.read"), testSecret),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "algorithm HS512 is not accepted",
		},
		{
			name:     "HS256 token when only JWKS is configured",
			cfg:      jwksOnly,
			token:    hs(claims("dict.read")),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "algorithm HS256 is not accepted (accepted: RS256, ES256)",
		},
		{
			// The classic confusion attack: HMAC keyed with the RSA public key.
			name:     "HS256 signed with the RSA public key, only JWKS configured",
			cfg:      jwksOnly,
			token:    sign(t, jwt.SigningMethodHS256, "rsa-1", claims("dict.read"), rsaDER),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "algorithm HS256 is not accepted",
		},
		{
			name:     "HS256 signed with the RSA public key, both configured",
			cfg:      both,
			token:    sign(t, jwt.SigningMethodHS256, "rsa-1", claims("dict.read"), rsaDER),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "signature",
		},
		{
			name:     "RS256 token when only a secret is configured",
			cfg:      secretOnly,
			token:    sign(t, jwt.SigningMethodRS256, "rsa-1", claims("dict.read"), k.rsa),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "algorithm RS256 is not accepted (accepted: HS256)",
		},
		{
			name:  "RS256 through JWKS",
			cfg:   jwksOnly,
			token: sign(t, jwt.SigningMethodRS256, "rsa-1", claims("dict.read dict.write"), k.rsa),
			want:  principalHeaders{"svc-payments", ispb, "dict.read dict.write"},
		},
		{
			name:  "ES256 through JWKS",
			cfg:   jwksOnly,
			token: sign(t, jwt.SigningMethodES256, "ec-1", claims("dict.read"), k.ec),
			want:  principalHeaders{"svc-payments", ispb, "dict.read"},
		},
		{
			name:  "HS256 and RS256 both configured, HS256 token",
			cfg:   both,
			token: hs(claims("dict.read")),
			want:  principalHeaders{"svc-payments", ispb, "dict.read"},
		},
		{
			name:     "RS256 token signed by a key not in the JWKS",
			cfg:      jwksOnly,
			token:    sign(t, jwt.SigningMethodRS256, "rsa-1", claims("dict.read"), otherRSA),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "signature",
		},
		{
			name:     "RS256 token naming the EC key",
			cfg:      jwksOnly,
			token:    sign(t, jwt.SigningMethodRS256, "ec-1", claims("dict.read"), k.rsa),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "does not match the type of the key",
		},
		{
			name:     "ES256 token naming the RSA key",
			cfg:      jwksOnly,
			token:    sign(t, jwt.SigningMethodES256, "rsa-1", claims("dict.read"), k.ec),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "does not match the type of the key",
		},
		{
			name:     "RS256 token naming the skipped Ed25519 key",
			cfg:      jwksOnly,
			token:    sign(t, jwt.SigningMethodRS256, "ed-1", claims("dict.read"), k.rsa),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "kid names no key",
		},
		{
			name:     "RS256 token without kid",
			cfg:      jwksOnly,
			token:    sign(t, jwt.SigningMethodRS256, "", claims("dict.read"), k.rsa),
			wantCode: connect.CodeUnauthenticated,
			wantMsg:  "no kid",
		},
		{
			name:  "ispb served",
			cfg:   served,
			token: hs(claims("dict.read")),
			want:  principalHeaders{"svc-payments", ispb, "dict.read"},
		},
		{
			name:     "ispb not served",
			cfg:      notServed,
			token:    hs(claims("dict.admin")),
			wantCode: connect.CodePermissionDenied,
			wantMsg:  "token acts for participant 12345678, which this instance does not serve",
			wantInfo: &errdetails.ErrorInfo{Reason: "Forbidden", Domain: "dict.pi.rsfn.net.br",
				Metadata: map[string]string{"participant": ispb}},
		},
		{
			name:     "missing scope",
			cfg:      secretOnly,
			token:    hs(claims("dict.write dict.lookup")),
			wantCode: connect.CodePermissionDenied,
			wantMsg:  "needs scope dict.read",
			wantInfo: &errdetails.ErrorInfo{Reason: "Forbidden", Domain: "dict.pi.rsfn.net.br",
				Metadata: map[string]string{"scope": "dict.read"}},
		},
		{
			name:     "no scope claim",
			cfg:      secretOnly,
			token:    hs(edit(claims(""), func(c jwt.MapClaims) { delete(c, "scope") })),
			wantCode: connect.CodePermissionDenied,
			wantMsg:  "dict.read",
		},
		{
			name:  "admin scope",
			cfg:   secretOnly,
			token: hs(claims("dict.admin")),
			want:  principalHeaders{"svc-payments", ispb, "dict.admin"},
		},
		{
			name:      "procedure not in table, read scope",
			cfg:       secretOnly,
			procedure: unknownProcedure,
			token:     hs(claims("dict.read dict.write dict.lookup dict.claims")),
			wantCode:  connect.CodePermissionDenied,
			wantMsg:   "needs scope dict.admin",
		},
		{
			name:      "procedure not in table, admin scope",
			cfg:       secretOnly,
			procedure: unknownProcedure,
			token:     hs(claims("dict.admin")),
			want:      principalHeaders{"svc-payments", ispb, "dict.admin"},
		},
		{
			name:   "lower-case bearer scheme",
			cfg:    secretOnly,
			header: []string{"bearer " + hs(claims("dict.read"))},
			want:   principalHeaders{"svc-payments", ispb, "dict.read"},
		},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			proc := test.procedure
			if proc == "" {
				proc = getKeyProcedure
			}
			client := newClients(t, test.cfg)[proc]
			req := connect.NewRequest(&emptypb.Empty{})
			switch {
			case test.header != nil:
				for _, h := range test.header {
					req.Header().Add("Authorization", h)
				}
			case test.token != "":
				req.Header().Set("Authorization", "Bearer "+test.token)
			}
			res, err := client.CallUnary(context.Background(), req)

			if test.wantCode == 0 {
				if err != nil {
					t.Fatalf("CallUnary: %v", err)
				}
				got := principalHeaders{
					Subject:     res.Header().Get("X-Subject"),
					Participant: res.Header().Get("X-Participant"),
					Scopes:      res.Header().Get("X-Scopes"),
				}
				if diff := cmp.Diff(test.want, got); diff != "" {
					t.Errorf("principal mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("CallUnary succeeded, want %v", test.wantCode)
			}
			t.Logf("error: %v", err)
			if got := connect.CodeOf(err); got != test.wantCode {
				t.Errorf("code = %v, want %v (err: %v)", got, test.wantCode, err)
			}
			if !strings.Contains(err.Error(), test.wantMsg) {
				t.Errorf("error %q does not contain %q", err, test.wantMsg)
			}
			if strings.Contains(err.Error(), string(testSecret)) {
				t.Errorf("error %q leaks the secret", err)
			}
			credentials := []string{test.token}
			for _, h := range test.header {
				_, credential, _ := strings.Cut(h, " ")
				credentials = append(credentials, credential)
			}
			for _, c := range credentials {
				if c != "" && strings.Contains(err.Error(), c) {
					t.Errorf("error %q contains the credential", err)
				}
			}
			if len(err.Error()) > 200 {
				t.Errorf("error message is %d bytes, want a short one: %q", len(err.Error()), err)
			}
			info := errorInfo(t, err)
			if info == nil {
				t.Fatalf("error %v has no ErrorInfo detail", err)
			}
			if test.wantInfo != nil {
				if diff := cmp.Diff(test.wantInfo, info, protocmp.Transform()); diff != "" {
					t.Errorf("ErrorInfo mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error %T is not a *connect.Error", err)
	}
	for _, d := range cerr.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatalf("detail %s: %v", d.Type(), err)
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

func TestIssueToken(t *testing.T) {
	t.Parallel()
	tok, err := rpc.IssueToken(testSecret, "ana", ispb, []string{"dict.read", "dict.claims"}, time.Hour)
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	// Through the real clock: IssueToken stamps time.Now.
	client := newClients(t, rpc.AuthConfig{HS256Secret: testSecret, Now: time.Now})[getKeyProcedure]
	req := connect.NewRequest(&emptypb.Empty{})
	req.Header().Set("Authorization", "Bearer "+tok)
	res, err := client.CallUnary(context.Background(), req)
	if err != nil {
		t.Fatalf("CallUnary with issued token: %v", err)
	}
	got := principalHeaders{res.Header().Get("X-Subject"), res.Header().Get("X-Participant"), res.Header().Get("X-Scopes")}
	if diff := cmp.Diff(principalHeaders{"ana", ispb, "dict.read dict.claims"}, got); diff != "" {
		t.Errorf("principal mismatch (-want +got):\n%s", diff)
	}

	for _, test := range []struct {
		name   string
		secret []byte
		sub    string
		ispb   string
		ttl    time.Duration
	}{
		{"short secret", []byte("short"), "ana", ispb, time.Hour},
		{"no sub", testSecret, "", ispb, time.Hour},
		{"bad ispb", testSecret, "ana", "1234", time.Hour},
		{"zero ttl", testSecret, "ana", ispb, 0},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			if _, err := rpc.IssueToken(test.secret, test.sub, test.ispb, nil, test.ttl); err == nil {
				t.Error("IssueToken succeeded, want an error")
			}
		})
	}
}

func TestNewAuthenticatorRefuses(t *testing.T) {
	t.Parallel()
	k := testKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecBytes, err := k.ec.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK := func(kid string, key *rsa.PublicKey) map[string]string {
		return map[string]string{"kty": "RSA", "kid": kid, "n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes())}
	}
	offCurve := make([]byte, 32)
	offCurve[31] = 1
	notJSON := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(notJSON, []byte("-----BEGIN PUBLIC KEY-----"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, test := range []struct {
		name    string
		cfg     rpc.AuthConfig
		wantErr string
	}{
		{"nothing configured", rpc.AuthConfig{}, "JWT_SECRET"},
		{"short secret", rpc.AuthConfig{HS256Secret: []byte("0123456789")}, "at least 32"},
		{"bad participant", rpc.AuthConfig{HS256Secret: testSecret, Participants: []string{"1234"}}, "not an ISPB"},
		{"negative leeway", rpc.AuthConfig{HS256Secret: testSecret, Leeway: -time.Second}, "leeway"},
		{"missing JWKS file", rpc.AuthConfig{JWKSFile: filepath.Join(t.TempDir(), "nope.json")}, "JWKS file"},
		{"JWKS not JSON", rpc.AuthConfig{JWKSFile: notJSON}, "not a JWK Set"},
		{"JWKS empty", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []any{}})}, "no RSA or EC P-256"},
		{"JWKS only unusable keys", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			{"kty": "oct", "kid": "h", "k": b64(testSecret)},
		}})}, "no RSA or EC P-256"},
		{"JWKS key without kid", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			rsaJWK("", &k.rsa.PublicKey),
		}})}, "no kid"},
		{"JWKS duplicate kid", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			rsaJWK("a", &k.rsa.PublicKey), rsaJWK("a", &k.rsa.PublicKey),
		}})}, "more than once"},
		{"JWKS short RSA key", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			rsaJWK("a", &small.PublicKey),
		}})}, "1024 bits"},
		{"JWKS EC point off the curve", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			{"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(offCurve), "y": b64(offCurve)},
		}})}, "not on the curve"},
		{"JWKS EC short coordinate", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			{"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(ecBytes[1:32]), "y": b64(ecBytes[33:])},
		}})}, "32 bytes"},
		{"JWKS RSA without e", rpc.AuthConfig{JWKSFile: writeFile(t, map[string]any{"keys": []map[string]string{
			{"kty": "RSA", "kid": "a", "n": b64(k.rsa.N.Bytes())},
		}})}, `"e" is missing`},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			_, err := rpc.NewAuthenticator(test.cfg)
			if err == nil {
				t.Fatalf("NewAuthenticator succeeded, want error containing %q", test.wantErr)
			}
			if !strings.Contains(err.Error(), test.wantErr) {
				t.Errorf("error %q does not contain %q", err, test.wantErr)
			}
			if strings.Contains(err.Error(), string(testSecret)) {
				t.Errorf("error %q leaks the secret", err)
			}
		})
	}
}

func TestRequiredScope(t *testing.T) {
	t.Parallel()
	got := map[string]string{}
	for _, m := range []string{
		"CreateKey", "UpdateKey", "DeleteKey", "GetKey", "ListKeys", "GetSyncStatus", "LookupKey", "CheckKeys",
		"CreateClaim", "GetClaim", "ListClaims", "AcknowledgeClaim", "ConfirmClaim", "CancelClaim", "CompleteClaim",
		"NotARealMethod",
	} {
		if scope, ok := rpc.RequiredScope("/dict.v1.CoreDictService/" + m); ok {
			got[m] = scope
		}
	}
	want := map[string]string{
		"CreateKey": "dict.write", "UpdateKey": "dict.write", "DeleteKey": "dict.write",
		"GetKey": "dict.read", "ListKeys": "dict.read", "GetSyncStatus": "dict.read",
		"LookupKey": "dict.lookup", "CheckKeys": "dict.lookup",
		"CreateClaim": "dict.claims", "GetClaim": "dict.claims", "ListClaims": "dict.claims",
		"AcknowledgeClaim": "dict.claims", "ConfirmClaim": "dict.claims", "CancelClaim": "dict.claims",
		"CompleteClaim": "dict.claims",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RequiredScope mismatch (-want +got):\n%s", diff)
	}
}

func TestPrincipalHas(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		scopes []string
		scope  string
		want   bool
	}{
		{nil, "dict.read", false},
		{[]string{"dict.read"}, "dict.read", true},
		{[]string{"dict.read"}, "dict.write", false},
		{[]string{"dict.lookup", "dict.admin"}, "dict.claims", true},
		{[]string{"dict.admin"}, "anything.else", true},
		{[]string{"dict.reads"}, "dict.read", false},
	} {
		if got := (rpc.Principal{Scopes: test.scopes}).Has(test.scope); got != test.want {
			t.Errorf("Principal{Scopes: %q}.Has(%q) = %v, want %v", test.scopes, test.scope, got, test.want)
		}
	}
}

func TestPrincipalFromEmptyContext(t *testing.T) {
	t.Parallel()
	if p, ok := rpc.PrincipalFrom(context.Background()); ok {
		t.Errorf("PrincipalFrom(empty) = %+v, true; want false", p)
	}
	want := rpc.Principal{Subject: "s", Participant: ispb, Scopes: []string{"dict.read"}}
	got, ok := rpc.PrincipalFrom(rpc.ContextWithPrincipal(context.Background(), want))
	if !ok {
		t.Fatal("PrincipalFrom(ContextWithPrincipal) = false")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("principal mismatch (-want +got):\n%s", diff)
	}
}

func TestInterceptorStreaming(t *testing.T) {
	t.Parallel()
	const listKeys = "/dict.v1.CoreDictService/ListKeys"
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{HS256Secret: testSecret, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(listKeys, connect.NewServerStreamHandler(listKeys,
		func(ctx context.Context, _ *connect.Request[emptypb.Empty], stream *connect.ServerStream[emptypb.Empty]) error {
			p, ok := rpc.PrincipalFrom(ctx)
			if !ok {
				return connect.NewError(connect.CodeInternal, errors.New("no principal"))
			}
			stream.ResponseHeader().Set("X-Participant", p.Participant)
			return stream.Send(&emptypb.Empty{})
		},
		connect.WithInterceptors(auth.Interceptor()),
	))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+listKeys)

	for _, test := range []struct {
		name     string
		scope    string // "" sends no token
		wantCode connect.Code
	}{
		{name: "no token", wantCode: connect.CodeUnauthenticated},
		{name: "missing scope", scope: "dict.write", wantCode: connect.CodePermissionDenied},
		{name: "read scope", scope: "dict.read"},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			req := connect.NewRequest(&emptypb.Empty{})
			if test.scope != "" {
				req.Header().Set("Authorization", "Bearer "+sign(t, jwt.SigningMethodHS256, "", claims(test.scope), testSecret))
			}
			stream, err := client.CallServerStream(context.Background(), req)
			if err != nil {
				t.Fatalf("CallServerStream: %v", err)
			}
			defer stream.Close()
			var n int
			for stream.Receive() {
				n++
			}
			switch err := stream.Err(); {
			case test.wantCode == 0 && err != nil:
				t.Fatalf("stream: %v", err)
			case test.wantCode != 0 && connect.CodeOf(err) != test.wantCode:
				t.Fatalf("stream error = %v, want code %v", err, test.wantCode)
			case test.wantCode != 0:
				return
			}
			if diff := cmp.Diff(ispb, stream.ResponseHeader().Get("X-Participant")); diff != "" || n != 1 {
				t.Errorf("participant mismatch (-want +got):\n%s; messages = %d, want 1", diff, n)
			}
		})
	}
}

// TestVerifiedTokenStillExpires: a token that passed once is remembered,
// but only until its exp: after that the same token is refused, and a
// token that fails is refused every time (a forged one never becomes
// good by being sent again).
func TestVerifiedTokenStillExpires(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := testNow
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	client := newClients(t, rpc.AuthConfig{HS256Secret: testSecret, Now: clock})[getKeyProcedure]
	call := func(tok string) error {
		req := connect.NewRequest(&emptypb.Empty{})
		req.Header().Set("Authorization", "Bearer "+tok)
		_, err := client.CallUnary(context.Background(), req)
		return err
	}
	good := sign(t, jwt.SigningMethodHS256, "", claims("dict.read"), testSecret)
	for i := range 3 {
		if err := call(good); err != nil {
			t.Fatalf("call %d with a valid token: %v", i+1, err)
		}
	}
	forged := sign(t, jwt.SigningMethodHS256, "", claims("dict.read"), []byte("not-the-secret-not-the-secret-0123"))
	for i := range 2 {
		if code := connect.CodeOf(call(forged)); code != connect.CodeUnauthenticated {
			t.Fatalf("forged token, call %d: %v, want unauthenticated", i+1, code)
		}
	}
	mu.Lock()
	now = testNow.Add(time.Hour + time.Second) // past exp
	mu.Unlock()
	if code := connect.CodeOf(call(good)); code != connect.CodeUnauthenticated {
		t.Fatalf("the remembered token after its exp: %v, want unauthenticated", code)
	}
}
