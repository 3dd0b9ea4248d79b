package registry

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
)

// TokenPath is where each node serves its token endpoint: clients get registry
// tokens from the node they talk to, so the flow works while the node is offline.
const TokenPath = "/outpost/v1/token"

// tokenLifetime is how long a registry token is good for. Revocation does not wait
// for it: every request re-checks the user the token names.
const tokenLifetime = 10 * time.Minute

// tokenIssuer signs registry tokens with the node's key and verifies them against
// the keys it trusts (signature, issuer, audience, expiry).
type tokenIssuer struct {
	keys    TokenKeys
	issuer  string
	service string
	now     func() time.Time

	// verified caches tokens whose signature checked out, by their exact text: a
	// client sends the same token with every request, and an ECDSA verify costs
	// more than the rest of a small request's checks together.
	mu       sync.Mutex
	verified map[string]verifiedToken
	signers  map[string]jose.Signer // by kid
}

type verifiedToken struct {
	claims *token.ClaimSet
	kid    string
}

var tokenAlgorithms = []jose.SignatureAlgorithm{jose.ES256}

func newTokenIssuer(keys TokenKeys, node string, now func() time.Time) *tokenIssuer {
	return &tokenIssuer{keys: keys, issuer: "outpost:" + node, service: node, now: now}
}

func (ti *tokenIssuer) signer(k SigningKey) (jose.Signer, error) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if s, ok := ti.signers[k.Kid]; ok {
		return s, nil
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.Key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.Kid))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	ti.signers = map[string]jose.Signer{k.Kid: s} // only the current key signs
	return s, nil
}

// issue signs a token for user granting access.
func (ti *tokenIssuer) issue(ctx context.Context, user string, access []*token.ResourceActions) (string, time.Time, error) {
	key, err := ti.keys.Signing(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	signer, err := ti.signer(key)
	if err != nil {
		return "", time.Time{}, err
	}
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
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign registry token: %w", err)
	}
	raw, err := jws.CompactSerialize()
	return raw, exp, err
}

// verify checks a registry token signed by a key this node trusts.
func (ti *tokenIssuer) verify(ctx context.Context, raw string) (*token.ClaimSet, error) {
	ti.mu.Lock()
	v, ok := ti.verified[raw]
	ti.mu.Unlock()
	if ok && ti.now().Before(time.Unix(v.claims.Expiration, 0).Add(token.Leeway)) {
		// The key may have left the set since (removed by an operator).
		if _, err := ti.keys.Trusted(ctx, v.kid); err == nil {
			return v.claims, nil
		}
	}
	claims, kid, err := ti.verifySignature(ctx, raw)
	if err != nil {
		return nil, err
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.verified == nil || len(ti.verified) > 10000 {
		ti.verified = map[string]verifiedToken{} // bounded: entries are cheap to rebuild
	}
	ti.verified[raw] = verifiedToken{claims: claims, kid: kid}
	return claims, nil
}

// ErrTokenRefused is a registry token this node does not accept; the wrapped message
// says why.
var ErrTokenRefused = errors.New("registry token refused")

// tokenHeaderFields are the only protected header fields a token may carry: those
// this node writes. Anything else is refused, above all x5c, jwk, jku and x5u, by
// which a token would bring the key that verifies it: distribution's verifier trusts
// an x5c chain to any system root and a jwk whose kid it knows.
var tokenHeaderFields = map[string]bool{"alg": true, "typ": true, "kid": true}

// verifySignature checks a token against the keys this node trusts, and nothing
// else: the key is chosen by kid from ti.keys, never taken from the token. It does
// not use distribution's Token.Verify, which follows x5c and jwk headers. It
// returns the claims and the key id.
func (ti *tokenIssuer) verifySignature(ctx context.Context, raw string) (*token.ClaimSet, string, error) {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrTokenRefused, fmt.Sprintf(format, a...))
	}
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return nil, "", refuse("not a signed JWT (header.payload.signature)")
	}
	hb, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return nil, "", refuse("header is not base64url: %v", err)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(hb, &header); err != nil {
		return nil, "", refuse("header is not a JSON object: %v", err)
	}
	for k := range header {
		if !tokenHeaderFields[k] {
			return nil, "", refuse("header field %q is not accepted: only keys this node holds verify its tokens", k)
		}
	}
	var alg, kid string
	if err := json.Unmarshal(header["alg"], &alg); err != nil || alg != string(jose.ES256) {
		return nil, "", refuse("algorithm %s: only %s is accepted", header["alg"], jose.ES256)
	}
	if err := json.Unmarshal(header["kid"], &kid); err != nil || kid == "" {
		return nil, "", refuse("no key id (kid) in the header")
	}
	key, err := ti.keys.Trusted(ctx, kid)
	if err != nil {
		return nil, "", refuse("signed by a key this node does not accept: %v", err)
	}
	jws, err := jose.ParseSignedCompact(raw, tokenAlgorithms)
	if err != nil {
		return nil, "", refuse("malformed: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, "", refuse("%d signatures: want exactly one", len(jws.Signatures))
	}
	payload, err := jws.Verify(key.Public)
	if err != nil {
		return nil, "", refuse("bad signature for key %q", kid)
	}
	var claims token.ClaimSet
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, "", refuse("claims: %v", err)
	}
	now := ti.now()
	switch {
	case claims.Issuer != ti.issuer:
		return nil, "", refuse("issuer %q: this node is %q", claims.Issuer, ti.issuer)
	case !slices.Contains(claims.Audience, ti.service):
		return nil, "", refuse("audience %v does not include %q", claims.Audience, ti.service)
	case now.After(time.Unix(claims.Expiration, 0).Add(token.Leeway)):
		return nil, "", refuse("expired at %s", time.Unix(claims.Expiration, 0).UTC().Format(time.RFC3339))
	case now.Before(time.Unix(claims.NotBefore, 0).Add(-token.Leeway)):
		return nil, "", refuse("not valid before %s", time.Unix(claims.NotBefore, 0).UTC().Format(time.RFC3339))
	case !key.SignUntil.IsZero() && time.Unix(claims.IssuedAt, 0).After(key.SignUntil.Add(token.Leeway)):
		return nil, "", refuse("issued at %s by key %q, which stopped signing at %s",
			time.Unix(claims.IssuedAt, 0).UTC().Format(time.RFC3339), kid, key.SignUntil.UTC().Format(time.RFC3339))
	}
	return &claims, kid, nil
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
			ae.write(w)
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
	raw, exp, err := r.tokens.issue(req.Context(), c.User, access)
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
