package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"

	"github.com/outpost-edge/outpost/events"
)

// forger makes registry tokens the way an attacker would: well-formed claims for
// this node, signed by keys and carrying headers of its choice.
type forger struct {
	t       *testing.T
	service string
	now     time.Time
}

func (f forger) claims(subject string) []byte {
	c := token.ClaimSet{Issuer: "outpost:" + f.service, Subject: subject, Audience: token.AudienceList{f.service},
		Expiration: f.now.Add(5 * time.Minute).Unix(), NotBefore: f.now.Add(-time.Minute).Unix(), IssuedAt: f.now.Unix(),
		JWTID: "forged", Access: []*token.ResourceActions{
			{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}},
			{Type: "repository", Name: "secret/app", Actions: []string{"pull", "push"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}}
	b, err := json.Marshal(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// sign signs the claims with key, adding headers (and the key itself with embedJWK).
func (f forger) sign(key *ecdsa.PrivateKey, subject string, embedJWK bool, headers map[jose.HeaderKey]any) string {
	opts := &jose.SignerOptions{EmbedJWK: embedJWK}
	opts.WithType("JWT")
	for k, v := range headers {
		opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	jws, err := s.Sign(f.claims(subject))
	if err != nil {
		f.t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		f.t.Fatal(err)
	}
	return raw
}

// raw builds a token from a header of its own and a signature function.
func (f forger) raw(header string, subject string, sig func(input []byte) []byte) string {
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(f.claims(subject))
	return input + "." + base64.RawURLEncoding.EncodeToString(sig([]byte(input)))
}

// certChain makes a CA and a leaf certificate for leafKey issued by it.
func certChain(t *testing.T, leafKey *ecdsa.PrivateKey) (ca, leaf *x509.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "anyone"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	if leaf, err = x509.ParseCertificate(leafDER); err != nil {
		t.Fatal(err)
	}
	return ca, leaf
}

func x5c(certs ...*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, base64.StdEncoding.EncodeToString(c.Raw))
	}
	return out
}

// TestForgedRegistryTokensAreRefused: only the node's own key verifies a registry
// token. Tokens that bring their own key (an x5c chain, to a CA of the attacker's or
// to one a verifier's pool trusts, or a jwk), that name the node's key but are signed
// by another, that use another algorithm, or that speak for the internal replication
// user, are all refused, each for its own reason; the node's own tokens still work.
func TestForgedRegistryTokensAreRefused(t *testing.T) {
	auth := &staticAuth{users: map[string]Principal{"reader": {User: "reader", Actions: pullOn("team/")}}}
	tr := startRegistryIn(t, t.TempDir(), ReadWrite, func(c *Config) {
		c.Auth = auth
		c.InternalPassword = "internal-secret"
	})
	f := forger{t: t, service: "testnode", now: time.Now()}
	ctx := context.Background()
	own, err := tr.tokens.keys.Signing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodeKid := own.Kid
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, leaf := certChain(t, attacker)

	// The x5c attack is real against distribution's verifier: with a pool that holds
	// the attacker's CA (as the system pool holds every public CA), it accepts the
	// token. Outpost's verifier must not.
	chained := f.sign(attacker, events.ReplicaUser, false, map[jose.HeaderKey]any{"x5c": x5c(leaf, ca)})
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if tok, err := token.NewToken(chained, tokenAlgorithms); err != nil {
		t.Fatalf("forged token does not parse: %v", err)
	} else if _, err := tok.Verify(token.VerifyOptions{TrustedIssuers: []string{"outpost:testnode"},
		AcceptedAudiences: []string{"testnode"}, Roots: pool}); err != nil {
		t.Fatalf("control: distribution's verifier refused the x5c token with the CA in its pool (%v): the test does not forge what it means to", err)
	}

	otherNode := newTokenIssuer(singleKey{newSigningKey(attacker)}, "testnode", time.Now) // same name, another key
	otherNodeToken, _, err := otherNode.issue(ctx, events.ReplicaUser, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs256 := func(input []byte) []byte {
		der, err := x509.MarshalPKIXPublicKey(own.Key.Public())
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, der)
		m.Write(input)
		return m.Sum(nil)
	}
	none := func([]byte) []byte { return nil }

	for _, c := range []struct {
		name, token, want string
	}{
		{"x5c chain to the attacker's own CA", f.sign(attacker, "reader", false, map[jose.HeaderKey]any{"x5c": x5c(leaf, ca)}),
			`header field "x5c" is not accepted`},
		{"x5c chain to a pooled CA, for the internal user", chained, `header field "x5c" is not accepted`},
		{"x5c chain with the node's kid", f.sign(attacker, events.ReplicaUser, false,
			map[jose.HeaderKey]any{"x5c": x5c(leaf, ca), "kid": nodeKid}), `header field "x5c" is not accepted`},
		{"jwk header with the attacker's key", f.sign(attacker, events.ReplicaUser, true, nil), `header field "jwk" is not accepted`},
		{"jwk header with the node's kid", f.sign(attacker, "reader", true, map[jose.HeaderKey]any{"kid": nodeKid}),
			`header field "jwk" is not accepted`},
		{"jku header", f.sign(attacker, "reader", false, map[jose.HeaderKey]any{"jku": "https://attacker.example/keys", "kid": nodeKid}),
			`header field "jku" is not accepted`},
		{"the node's kid, signed by another key", f.sign(attacker, events.ReplicaUser, false, map[jose.HeaderKey]any{"kid": nodeKid}),
			"bad signature for key " + `"` + nodeKid + `"`},
		{"another node's key (same node name)", otherNodeToken, "signed by a key this node does not accept: key not trusted: this node signs with key"},
		{"alg none", f.raw(`{"alg":"none","typ":"JWT","kid":"`+nodeKid+`"}`, events.ReplicaUser, none), "algorithm \"none\": only ES256"},
		{"HS256 keyed with the node's public key", f.raw(`{"alg":"HS256","typ":"JWT","kid":"`+nodeKid+`"}`, events.ReplicaUser, hs256),
			"algorithm \"HS256\": only ES256"},
		{"no kid", f.sign(own.Key, "reader", false, nil), "no key id (kid)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/v2/team/app/tags/list", "/v2/_catalog"} {
				req, _ := http.NewRequest(http.MethodGet, tr.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+c.token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body := ociMessage(resp)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "registry token refused") ||
					!strings.Contains(body, c.want) {
					t.Errorf("GET %s: %s %s, want 401 saying %q", path, resp.Status, body, c.want)
				}
			}
		})
	}

	// Controls: the node's own tokens work, for a client and for the internal user,
	// and one past its expiry (by the node's clock) does not.
	for _, user := range []string{"reader", events.ReplicaUser} {
		raw, _, err := tr.tokens.issue(ctx, user, []*token.ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, tr.URL+"/v2/team/app/tags/list", nil)
		req.Header.Set("Authorization", "Bearer "+raw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound { // authorized; the repository is empty
			t.Errorf("the node's own token for %s: %s, want 404 (authorized, nothing there)", user, resp.Status)
		}
	}
	late := newTokenIssuer(tr.tokens.keys, "testnode", func() time.Time { return time.Now().Add(tokenLifetime + token.Leeway + time.Minute) })
	raw, _, err := tr.tokens.issue(ctx, "reader", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.verify(ctx, raw); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("a token past its expiry by the node's clock: %v, want expired", err)
	}
}
