package rpc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
)

// jwksMaxFileSize bounds what we read from JWT_JWKS_FILE: a key set holding a
// few dozen keys is a few tens of KiB, so anything larger is a wrong path.
const jwksMaxFileSize = 1 << 20

// jwksMinRSABits refuses RSA keys too short to trust (NIST SP 800-131A).
const jwksMinRSABits = 2048

// verificationKey is one public key from a JWK Set, bound to the only
// algorithm it may verify. Binding the algorithm to the key, not to the token,
// is what makes algorithm confusion impossible.
type verificationKey struct {
	alg string // jwt.SigningMethodRS256 or jwt.SigningMethodES256 name
	key crypto.PublicKey
}

// jsonWebKey holds the members of RFC 7517/7518 we read. Private members (d,
// p, q, ...) are never read.
type jsonWebKey struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	// RSA
	N string `json:"n"`
	E string `json:"e"`
	// EC
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// loadJWKS reads a JWK Set (RFC 7517, section 5) from path and returns its
// RS256 and ES256 verification keys by kid. Keys of other types or curves, and
// keys marked for encryption, are skipped, so an identity provider's full set
// can be used as is; a malformed RSA or P-256 key is an error, never skipped.
func loadJWKS(path string) (map[string]verificationKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("JWKS file: %w", err)
	}
	defer f.Close()
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	data, err := io.ReadAll(io.LimitReader(f, jwksMaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", path, err)
	}
	if len(data) > jwksMaxFileSize {
		return nil, fmt.Errorf("JWKS file %s is larger than %d bytes", path, jwksMaxFileSize)
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS file %s is not a JWK Set: %w", path, err)
	}
	keys := make(map[string]verificationKey, len(set.Keys))
	for i, raw := range set.Keys {
		var jwk jsonWebKey
		if err := json.Unmarshal(raw, &jwk); err != nil {
			return nil, fmt.Errorf("JWKS file %s: key %d: %w", path, i, err)
		}
		vk, ok, err := jwk.verificationKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS file %s: key %d (kid %q): %w", path, i, jwk.Kid, err)
		}
		if !ok {
			continue
		}
		if jwk.Kid == "" {
			return nil, fmt.Errorf("JWKS file %s: key %d has no kid; tokens select keys by kid", path, i)
		}
		if _, dup := keys[jwk.Kid]; dup {
			return nil, fmt.Errorf("JWKS file %s: kid %q appears more than once", path, jwk.Kid)
		}
		keys[jwk.Kid] = vk
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS file %s holds no RSA or EC P-256 signing key", path)
	}
	return keys, nil
}

// verificationKey converts the JWK. It reports ok=false for keys this service
// does not use (other key types or curves, encryption keys, keys pinned to an
// algorithm other than RS256/ES256).
func (k jsonWebKey) verificationKey() (verificationKey, bool, error) {
	if k.Use != "" && k.Use != "sig" {
		return verificationKey{}, false, nil
	}
	switch k.Kty {
	case "RSA":
		if k.Alg != "" && k.Alg != "RS256" {
			return verificationKey{}, false, nil
		}
		pub, err := k.rsaPublicKey()
		if err != nil {
			return verificationKey{}, false, err
		}
		return verificationKey{alg: "RS256", key: pub}, true, nil
	case "EC":
		if k.Crv != "P-256" || (k.Alg != "" && k.Alg != "ES256") {
			return verificationKey{}, false, nil
		}
		pub, err := k.p256PublicKey()
		if err != nil {
			return verificationKey{}, false, err
		}
		return verificationKey{alg: "ES256", key: pub}, true, nil
	default:
		return verificationKey{}, false, nil
	}
}

func (k jsonWebKey) rsaPublicKey() (*rsa.PublicKey, error) {
	n, err := decodeJWKBytes("n", k.N)
	if err != nil {
		return nil, err
	}
	e, err := decodeJWKBytes("e", k.E)
	if err != nil {
		return nil, err
	}
	if len(e) > 4 {
		return nil, errors.New("RSA exponent e is too large")
	}
	var exp int
	for _, b := range e {
		exp = exp<<8 | int(b)
	}
	if exp < 3 || exp%2 == 0 {
		return nil, errors.New("RSA exponent e is invalid")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	if bits := pub.N.BitLen(); bits < jwksMinRSABits {
		return nil, fmt.Errorf("RSA modulus is %d bits; at least %d are required", bits, jwksMinRSABits)
	}
	return pub, nil
}

func (k jsonWebKey) p256PublicKey() (*ecdsa.PublicKey, error) {
	x, err := decodeJWKBytes("x", k.X)
	if err != nil {
		return nil, err
	}
	y, err := decodeJWKBytes("y", k.Y)
	if err != nil {
		return nil, err
	}
	if len(x) != 32 || len(y) != 32 {
		return nil, errors.New("P-256 coordinates x and y must be 32 bytes each")
	}
	point := append(append([]byte{4}, x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("P-256 point (x, y) is not on the curve")
	}
	return pub, nil
}

// decodeJWKBytes decodes a base64url member; RFC 7518 says unpadded, but some
// tools pad, and padding carries no meaning.
func decodeJWKBytes(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("member %q is missing", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("member %q is not base64url", name)
	}
	return b, nil
}
