package rpc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/lbpay-lab/core-dict/dict"
)

// The scopes a token may carry in its space-separated "scope" claim.
const (
	ScopeRead   = "dict.read"
	ScopeWrite  = "dict.write"
	ScopeLookup = "dict.lookup"
	ScopeClaims = "dict.claims"
	// ScopeAdmin implies every other scope, including for procedures that are
	// in no scope table yet.
	ScopeAdmin = "dict.admin"
)

// DefaultAudience is the "aud" a token must name when [AuthConfig].Audience is
// empty, and the one [IssueToken] writes.
const DefaultAudience = "core-dict"

// MinHS256SecretLen is the shortest JWT_SECRET [NewAuthenticator] and
// [IssueToken] accept: RFC 7518, section 3.2 asks for a key at least as long
// as the hash output.
const MinHS256SecretLen = 32

// authMaxHeaderLen bounds the Authorization header we are willing to parse. A
// real token is well under 2 KiB; a larger header is abuse or a mistake.
const authMaxHeaderLen = 8 << 10

// The ErrorInfo vocabulary of authentication failures (API.md, "Errors").
const (
	authErrorDomain           = "dict.pi.rsfn.net.br"
	authReasonUnauthenticated = "Unauthenticated"
	authReasonForbidden       = "Forbidden"
)

// procedureScopes is the one table of which scope each procedure needs. A
// procedure missing here needs [ScopeAdmin], so a new RPC is closed until
// someone decides who may call it.
var procedureScopes = map[string]string{
	"/dict.v1.CoreDictService/CreateKey":        ScopeWrite,
	"/dict.v1.CoreDictService/UpdateKey":        ScopeWrite,
	"/dict.v1.CoreDictService/DeleteKey":        ScopeWrite,
	"/dict.v1.CoreDictService/GetKey":           ScopeRead,
	"/dict.v1.CoreDictService/ListKeys":         ScopeRead,
	"/dict.v1.CoreDictService/GetSyncStatus":    ScopeRead,
	"/dict.v1.CoreDictService/LookupKey":        ScopeLookup,
	"/dict.v1.CoreDictService/CheckKeys":        ScopeLookup,
	"/dict.v1.CoreDictService/CreditPayment":    ScopeLookup,
	"/dict.v1.CoreDictService/CreateClaim":      ScopeClaims,
	"/dict.v1.CoreDictService/GetClaim":         ScopeClaims,
	"/dict.v1.CoreDictService/ListClaims":       ScopeClaims,
	"/dict.v1.CoreDictService/AcknowledgeClaim": ScopeClaims,
	"/dict.v1.CoreDictService/ConfirmClaim":     ScopeClaims,
	"/dict.v1.CoreDictService/CancelClaim":      ScopeClaims,
	"/dict.v1.CoreDictService/CompleteClaim":    ScopeClaims,
}

// RequiredScope reports the scope a procedure (full name, as in
// [connect.Spec].Procedure: "/dict.v1.CoreDictService/CreateKey") needs, and
// false when the procedure is not in the table, in which case only
// [ScopeAdmin] may call it.
func RequiredScope(procedure string) (string, bool) {
	scope, ok := procedureScopes[procedure]
	return scope, ok
}

// Principal is the verified caller of an RPC: who it is, which participant
// (ISPB) it acts for, and what it may do.
type Principal struct {
	Subject     string
	Participant string
	Scopes      []string
}

// Has reports whether p holds scope, either directly or through [ScopeAdmin].
func (p Principal) Has(scope string) bool {
	for _, s := range p.Scopes {
		if s == scope || s == ScopeAdmin {
			return true
		}
	}
	return false
}

type principalKey struct{}

// PrincipalFrom returns the [Principal] the [Authenticator] interceptor put
// into ctx, and false when there is none (the RPC did not pass through it).
// Handlers must treat false as a server bug and refuse, never as anonymous.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// ContextWithPrincipal returns a copy of ctx carrying p. The interceptor uses
// it; handler tests use it to call handlers directly without a token.
func ContextWithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// AuthConfig configures an [Authenticator]. At least one of HS256Secret and
// JWKSFile must be set; with both, a token is checked against the secret or
// the key set depending on its algorithm, never both.
type AuthConfig struct {
	// HS256Secret verifies HS256 tokens (JWT_SECRET); at least
	// [MinHS256SecretLen] bytes.
	HS256Secret []byte
	// JWKSFile is the path of a JWK Set (JWT_JWKS_FILE) whose RSA and EC P-256
	// keys verify RS256 and ES256 tokens, selected by the token's "kid".
	JWKSFile string
	// Participants are the ISPBs this instance serves (DICT_PARTICIPANTS).
	// Empty means any: the token's participant is not checked. Blank entries
	// are ignored.
	Participants []string
	// Audience must be among the token's "aud"; empty means [DefaultAudience].
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authenticator verifies bearer tokens and decides, per procedure, whether the
// caller may proceed. It is safe for concurrent use.
type Authenticator struct {
	secret       []byte
	keys         map[string]verificationKey // by kid
	participants map[string]bool            // empty: any
	audience     string
	methods      []string // accepted "alg" values, for messages
	parser       *jwt.Parser
	now          func() time.Time
	verified     tokenCache
}

// NewAuthenticator checks cfg and loads the JWKS file, if any. Keys are read
// once: rotating them means restarting the process.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	a := &Authenticator{
		audience:     cfg.Audience,
		participants: make(map[string]bool, len(cfg.Participants)),
	}
	if a.audience == "" {
		a.audience = DefaultAudience
	}
	if cfg.HS256Secret == nil && cfg.JWKSFile == "" {
		return nil, errors.New("auth: no way to verify tokens: set JWT_SECRET, JWT_JWKS_FILE or both")
	}
	if cfg.HS256Secret != nil {
		if len(cfg.HS256Secret) < MinHS256SecretLen {
			return nil, fmt.Errorf("auth: JWT_SECRET is %d bytes; HS256 needs at least %d random bytes", len(cfg.HS256Secret), MinHS256SecretLen)
		}
		a.secret = slices.Clone(cfg.HS256Secret)
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	if cfg.JWKSFile != "" {
		keys, err := loadJWKS(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		a.keys = keys
		for _, alg := range []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()} {
			for _, k := range keys {
				if k.alg == alg {
					a.methods = append(a.methods, alg)
					break
				}
			}
		}
	}
	for _, p := range cfg.Participants {
		// Tolerate what strings.Split makes of "" or "a, b".
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !dict.IsISPB(p) {
			return nil, fmt.Errorf("auth: participant %q is not an ISPB (8 digits)", p)
		}
		a.participants[p] = true
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth: negative leeway %v", cfg.Leeway)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithAudience(a.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
	}
	a.now = time.Now
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
		a.now = cfg.Now
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// tokenCache remembers the tokens that passed verification, by their
// SHA-256, until they expire. A client sends the same token with every call
// until it renews it, and verifying one (parsing, the signature, the
// claims) cost a lookup about a fifth of its CPU with HS256, more with
// RS256 or ES256. Only successes are kept, so a forged or expired token is
// verified, and refused, every time; a kept one is used only while the
// clock is before its exp (without the leeway: past that, the parser
// decides again). Keys never change while the process runs (they are read
// once), so a verification stays true. Bounded: when full it is emptied.
type tokenCache struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]verifiedToken
}

type verifiedToken struct {
	p       Principal
	expires time.Time
}

// maxVerifiedTokens bounds the cache: about 200 bytes an entry.
const maxVerifiedTokens = 10_000

func (c *tokenCache) get(sum [sha256.Size]byte, now time.Time) (Principal, bool) {
	c.mu.RLock()
	v, ok := c.m[sum]
	c.mu.RUnlock()
	if !ok || !now.Before(v.expires) {
		return Principal{}, false
	}
	p := v.p
	p.Scopes = slices.Clone(p.Scopes) // the caller's own, as a parse would give
	return p, true
}

func (c *tokenCache) put(sum [sha256.Size]byte, v verifiedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxVerifiedTokens {
		c.m = make(map[[sha256.Size]byte]verifiedToken)
	}
	c.m[sum] = v
}

// tokenClaims are the claims of API.md, "Authentication".
type tokenClaims struct {
	jwt.RegisteredClaims
	ISPB  string `json:"ispb"`
	Scope string `json:"scope"`
}

// Errors the keyfunc returns; authenticate turns them into messages.
var (
	errTokenNoKid       = errors.New("token has no kid")
	errTokenUnknownKid  = errors.New("token kid names no known key")
	errTokenKeyMismatch = errors.New("token alg does not match its key")
)

// keyFor picks the verification key for a token. The parser has already
// limited alg to a.methods; this also ties each alg to one kind of key, so an
// HS256 token is only ever checked against the secret and an RS256/ES256 token
// only against a JWKS key of that exact type.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	switch alg := t.Method.Alg(); alg {
	case jwt.SigningMethodHS256.Alg():
		if a.secret == nil {
			return nil, errTokenKeyMismatch
		}
		return a.secret, nil
	case jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg():
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errTokenNoKid
		}
		k, ok := a.keys[kid]
		if !ok {
			return nil, errTokenUnknownKid
		}
		if k.alg != alg {
			return nil, errTokenKeyMismatch
		}
		return k.key, nil
	default:
		return nil, errTokenKeyMismatch
	}
}

// Interceptor returns the server-side interceptor that authenticates every
// unary and streaming RPC and puts the [Principal] into its context. Install
// it on the CoreDictService handler only: health and reflection are served
// without a token, and any procedure it does not know needs [ScopeAdmin].
func (a *Authenticator) Interceptor() connect.Interceptor {
	return authInterceptor{a}
}

type authInterceptor struct{ a *Authenticator }

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		p, err := i.a.authorize(req.Header(), req.Spec().Procedure)
		if err != nil {
			return nil, err
		}
		return next(ContextWithPrincipal(ctx, p), req)
	}
}

func (authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p, err := i.a.authorize(conn.RequestHeader(), conn.Spec().Procedure)
		if err != nil {
			return err
		}
		return next(ContextWithPrincipal(ctx, p), conn)
	}
}

// authorize authenticates the request and checks that the principal may call
// procedure on this instance.
func (a *Authenticator) authorize(h http.Header, procedure string) (Principal, error) {
	p, err := a.authenticate(h)
	if err != nil {
		return Principal{}, err
	}
	if len(a.participants) > 0 && !a.participants[p.Participant] {
		return Principal{}, authForbidden(
			fmt.Sprintf("token acts for participant %s, which this instance does not serve", p.Participant),
			map[string]string{"participant": p.Participant})
	}
	scope, ok := RequiredScope(procedure)
	if !ok {
		scope = ScopeAdmin
	}
	if !p.Has(scope) {
		return Principal{}, authForbidden(
			fmt.Sprintf("this call needs scope %s, which the token does not grant", scope),
			map[string]string{"scope": scope})
	}
	return p, nil
}

// authenticate verifies the bearer token in h. Its messages name what is wrong
// with the token but never echo the token or anything read from it unverified.
func (a *Authenticator) authenticate(h http.Header) (Principal, error) {
	values := h.Values("Authorization")
	switch {
	case len(values) == 0 || values[0] == "":
		return Principal{}, authUnauthenticated("missing Authorization: Bearer token")
	case len(values) > 1:
		return Principal{}, authUnauthenticated("more than one Authorization header")
	case len(values[0]) > authMaxHeaderLen:
		return Principal{}, authUnauthenticated(fmt.Sprintf("Authorization header is longer than %d bytes", authMaxHeaderLen))
	}
	scheme, raw, _ := strings.Cut(values[0], " ")
	raw = strings.TrimSpace(raw)
	if !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return Principal{}, authUnauthenticated("Authorization header is not \"Bearer <token>\"")
	}

	sum := sha256.Sum256([]byte(raw))
	if p, ok := a.verified.get(sum, a.now()); ok {
		return p, nil
	}
	var claims tokenClaims
	if token, err := a.parser.ParseWithClaims(raw, &claims, a.keyFor); err != nil {
		return Principal{}, authUnauthenticated(a.tokenErrorMessage(err, token, &claims))
	}
	if claims.Subject == "" {
		return Principal{}, authUnauthenticated("token has no sub claim")
	}
	if !dict.IsISPB(claims.ISPB) {
		return Principal{}, authUnauthenticated("token ispb claim must be the participant's 8-digit ISPB")
	}
	p := Principal{
		Subject:     claims.Subject,
		Participant: claims.ISPB,
		Scopes:      strings.Fields(claims.Scope),
	}
	// exp is required (WithExpirationRequired), so it is set here.
	a.verified.put(sum, verifiedToken{p: p, expires: claims.ExpiresAt.Time})
	return p, nil
}

// tokenErrorMessage maps a jwt error to a short message. jwt's own messages
// are not passed through: they are written for developers and may change.
// claims are only looked at for claim errors, which the parser reports after
// the signature has been verified.
func (a *Authenticator) tokenErrorMessage(err error, token *jwt.Token, claims *tokenClaims) string {
	accepted := strings.Join(a.methods, ", ")
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case token != nil && token.Method != nil && !slices.Contains(a.methods, token.Method.Alg()):
		// The name is safe to echo: the parser only sets Method from its own
		// registry of algorithms.
		return fmt.Sprintf("token algorithm %s is not accepted (accepted: %s)", token.Method.Alg(), accepted)
	case errors.Is(err, errTokenNoKid):
		return "token has no kid header to select a verification key"
	case errors.Is(err, errTokenUnknownKid):
		return "token kid names no key in the configured JWKS"
	case errors.Is(err, errTokenKeyMismatch):
		return "token alg does not match the type of the key its kid names"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// Unknown or missing alg, or a claim of the wrong JSON type.
		return fmt.Sprintf("token cannot be verified; accepted algorithms: %s", accepted)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && claims.ExpiresAt == nil:
		return "token has no exp claim"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return fmt.Sprintf("token has no aud claim; it must include %q", a.audience)
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token is issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fmt.Sprintf("token audience does not include %q", a.audience)
	default:
		return "token is invalid"
	}
}

func authUnauthenticated(msg string) *connect.Error {
	return authError(connect.CodeUnauthenticated, authReasonUnauthenticated, msg, nil)
}

func authForbidden(msg string, metadata map[string]string) *connect.Error {
	return authError(connect.CodePermissionDenied, authReasonForbidden, msg, metadata)
}

func authError(code connect.Code, reason, msg string, metadata map[string]string) *connect.Error {
	err := connect.NewError(code, errors.New(msg))
	detail, detailErr := connect.NewErrorDetail(&errdetails.ErrorInfo{
		Reason:   reason,
		Domain:   authErrorDomain,
		Metadata: metadata,
	})
	if detailErr == nil { // marshalling a fixed message type cannot fail
		err.AddDetail(detail)
	}
	return err
}

// IssueToken returns an HS256 token for sub acting for participant ispb with
// scopes, audience [DefaultAudience], valid for ttl from now. It is what
// `core-dict token` prints; production tokens come from an identity provider.
func IssueToken(secret []byte, sub, ispb string, scopes []string, ttl time.Duration) (string, error) {
	switch {
	case len(secret) < MinHS256SecretLen:
		return "", fmt.Errorf("issue token: secret is %d bytes; HS256 needs at least %d", len(secret), MinHS256SecretLen)
	case sub == "":
		return "", errors.New("issue token: sub is empty")
	case !dict.IsISPB(ispb):
		return "", fmt.Errorf("issue token: ispb %q is not 8 digits", ispb)
	case ttl <= 0:
		return "", fmt.Errorf("issue token: ttl %v is not positive", ttl)
	}
	now := time.Now()
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Audience:  jwt.ClaimStrings{DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		ISPB:  ispb,
		Scope: strings.Join(strings.Fields(strings.Join(scopes, " ")), " "),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	return s, nil
}
