package registry

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"

	"github.com/outpost-edge/outpost/events"
)

// TokenPath is where each node serves its token endpoint: clients get registry
// tokens from the node they talk to, so the flow works while the node is offline.
const TokenPath = "/outpost/v1/token"

// tokenLifetime is how long a registry token is good for. Revocation does not wait
// for it: every request re-checks the user the token names.
const tokenLifetime = 10 * time.Minute

// tokenIssuer signs registry tokens with the node's key and verifies them with
// distribution's token package (signature, issuer, audience, expiry).
type tokenIssuer struct {
	key     *ecdsa.PrivateKey
	kid     string
	signer  jose.Signer
	issuer  string
	service string
	trusted map[string]crypto.PublicKey
	now     func() time.Time

	// verified caches tokens whose signature checked out, by their exact text: a
	// client sends the same token with every request, and an ECDSA verify costs
	// more than the rest of a small request's checks together.
	mu       sync.Mutex
	verified map[string]*token.ClaimSet
}

var tokenAlgorithms = []jose.SignatureAlgorithm{jose.ES256}

// loadSigningKey reads the node's token signing key, or makes one (0600) on first start.
func loadSigningKey(file string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("token key %s: not PEM", file)
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", file, err)
	}
	return key, nil
}

func newTokenIssuer(key *ecdsa.PrivateKey, node string, now func() time.Time) (*tokenIssuer, error) {
	kid := token.GetJWKThumbprint(key.Public())
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	return &tokenIssuer{key: key, kid: kid, signer: signer, issuer: "outpost:" + node, service: node,
		trusted: map[string]crypto.PublicKey{kid: key.Public()}, now: now}, nil
}

// issue signs a token for user granting access.
func (ti *tokenIssuer) issue(user string, access []*token.ResourceActions) (string, time.Time, error) {
	now := ti.now()
	exp := now.Add(tokenLifetime)
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", time.Time{}, err
	}
	if access == nil {
		access = []*token.ResourceActions{}
	}
	claims := token.ClaimSet{Issuer: ti.issuer, Subject: user, Audience: token.AudienceList{ti.service},
		Expiration: exp.Unix(), NotBefore: now.Add(-time.Second).Unix(), IssuedAt: now.Unix(),
		JWTID: base64.RawURLEncoding.EncodeToString(jti), Access: access}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", time.Time{}, err
	}
	jws, err := ti.signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign registry token: %w", err)
	}
	raw, err := jws.CompactSerialize()
	return raw, exp, err
}

// verify checks a registry token this node issued.
func (ti *tokenIssuer) verify(raw string) (*token.ClaimSet, error) {
	ti.mu.Lock()
	claims, ok := ti.verified[raw]
	ti.mu.Unlock()
	if ok {
		if now := ti.now(); now.Before(time.Unix(claims.Expiration, 0).Add(token.Leeway)) {
			return claims, nil
		}
	}
	claims, err := ti.verifySignature(raw)
	if err != nil {
		return nil, err
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.verified == nil || len(ti.verified) > 10000 {
		ti.verified = map[string]*token.ClaimSet{} // bounded: entries are cheap to rebuild
	}
	ti.verified[raw] = claims
	return claims, nil
}

func (ti *tokenIssuer) verifySignature(raw string) (*token.ClaimSet, error) {
	t, err := token.NewToken(raw, tokenAlgorithms)
	if err != nil {
		return nil, err
	}
	claims, err := t.Verify(token.VerifyOptions{TrustedIssuers: []string{ti.issuer},
		AcceptedAudiences: []string{ti.service}, TrustedKeys: ti.trusted})
	if err != nil {
		return nil, fmt.Errorf("%w (bad signature, another node's token, or expired)", err)
	}
	return claims, nil
}

// TokenHandler serves the token endpoint: basic credentials (or none, for anonymous
// pull) in, a registry token out granting what was asked for and is allowed.
func (r *Registry) TokenHandler() http.Handler {
	return http.HandlerFunc(r.serveToken)
}

func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	var user, pw string
	var hasCreds bool
	q := req.URL.Query()
	switch req.Method {
	case http.MethodGet:
		user, pw, hasCreds = req.BasicAuth()
	case http.MethodPost:
		// The OAuth2 form some clients (containerd) try first.
		if err := req.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, codeUnsupported, fmt.Sprintf("token request: %v", err), nil)
			return
		}
		if g := req.PostForm.Get("grant_type"); g != "password" {
			writeError(w, http.StatusBadRequest, codeUnsupported, fmt.Sprintf("grant_type %q: only password is supported", g), nil)
			return
		}
		user, pw, hasCreds = req.PostForm.Get("username"), req.PostForm.Get("password"), true
		q = req.PostForm
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "token endpoint: GET or POST", nil)
		return
	}
	c := caller{anonymous: true}
	if hasCreds {
		var err error
		if c, err = r.login(req, user, pw); err != nil {
			var ae *authError
			errors.As(err, &ae)
			if ae.status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", fmt.Sprint(int(events.FailedLoginEvery.Seconds())))
			}
			writeError(w, ae.status, ae.code, ae.msg, nil)
			return
		}
	}
	anon := r.anonymousPull()
	if c.anonymous && !anon {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Basic realm=%q`, r.cfg.Node))
		writeError(w, http.StatusUnauthorized, codeUnauthorized,
			fmt.Sprintf("authentication required: anonymous pull is off at node %s; sign in with a client token", r.cfg.Node), nil)
		return
	}
	var access []*token.ResourceActions
	for _, scope := range q["scope"] {
		for _, s := range strings.Fields(scope) {
			if ra := grantScope(c, s, anon); ra != nil {
				access = append(access, ra)
			}
		}
	}
	raw, exp, err := r.tokens.issue(c.User, access)
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknown, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": raw, "access_token": raw, "expires_in": int(time.Until(exp).Seconds()),
		"issued_at": r.tokens.now().UTC().Format(time.RFC3339),
	})
}

// grantScope is the part of one requested scope (type:name:actions) the caller may have.
func grantScope(c caller, scope string, anon bool) *token.ResourceActions {
	i, j := strings.Index(scope, ":"), strings.LastIndex(scope, ":")
	if i < 0 || i == j {
		return nil
	}
	typ, name, actions := scope[:i], scope[i+1:j], strings.Split(scope[j+1:], ",")
	ra := &token.ResourceActions{Type: typ, Name: name}
	switch {
	case typ == "registry" && name == "catalog":
		if !c.anonymous {
			ra.Actions = []string{"*"}
		}
	case typ == "repository" && validName(name):
		for _, a := range actions {
			if (a == "pull" || a == "push" || a == "delete") && c.permits(name, a, anon) {
				ra.Actions = append(ra.Actions, a)
			}
		}
	}
	if len(ra.Actions) == 0 {
		return nil
	}
	return ra
}

// clientAddr is the address a request came from, without its port.
func clientAddr(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return host
}
