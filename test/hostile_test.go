package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/test/content"
)

// selfSignedToken signs claims for node with key, adding headers (the key itself
// with embedJWK), as anyone could.
func selfSignedToken(t *testing.T, n *Node, key *ecdsa.PrivateKey, sub string, embedJWK bool, headers map[jose.HeaderKey]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{EmbedJWK: embedJWK}).WithType("JWT")
	for k, v := range headers {
		opts.WithHeader(k, v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	payload, _ := json.Marshal(token.ClaimSet{Issuer: "outpost:" + n.opts.Name, Subject: sub,
		Audience: token.AudienceList{n.opts.Name}, Expiration: now.Add(5 * time.Minute).Unix(), NotBefore: now.Add(-time.Minute).Unix(),
		IssuedAt: now.Unix(), Access: []*token.ResourceActions{
			{Type: "repository", Name: "secret/app", Actions: []string{"pull", "push"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}}}})
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// x5cChain makes a CA of the attacker's and a leaf certificate for key under it,
// as an x5c header carries them.
func x5cChain(t *testing.T, key *ecdsa.PrivateKey) []string {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "anyone"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return []string{base64.StdEncoding.EncodeToString(leafDER), base64.StdEncoding.EncodeToString(caDER)}
}

// nodeKid is the key id of a node's token signing key.
func nodeKid(t *testing.T, n *Node) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Data(), "token-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return token.GetJWKThumbprint(key.Public())
}

// httpCall sends a request and turns anything but want into an error with the body.
func httpCall(req *http.Request, want int) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode == want {
		return nil
	}
	// The message in its own words: OCI errors, or the management API's {"error"}.
	var v struct {
		Error  string
		Errors []struct{ Code, Message string }
	}
	msg := strings.TrimSpace(body.String())
	if json.Unmarshal(body.Bytes(), &v) == nil {
		switch {
		case v.Error != "":
			msg = v.Error
		case len(v.Errors) > 0:
			msg = v.Errors[0].Code + ": " + v.Errors[0].Message
		}
	}
	return fmt.Errorf("%s: %s", resp.Status, msg)
}

// blobLinked is an error when repo at n serves blob d to any of who: the mount
// happened.
func blobLinked(n *Node, repo, d string, who map[string]authn.AuthConfig) error {
	for name, a := range who {
		req, _ := http.NewRequest(http.MethodHead, n.URL+"/v2/"+repo+"/blobs/"+d, nil)
		req.SetBasicAuth(a.Username, a.Password)
		if err := httpCall(req, http.StatusNotFound); err != nil {
			return fmt.Errorf("%s's HEAD of %s@%s: %v", name, repo, d, err)
		}
	}
	return nil
}

// originTransport sends Outpost-Origin with every request, as the child's active
// process (its instance), so that only the origin is wrong.
type originTransport struct{ origin, instance string }

func (o originTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(events.HeaderOrigin, o.origin)
	r.Header.Set(events.HeaderInstance, o.instance)
	return http.DefaultTransport.RoundTrip(r)
}

// loginFrom asks n's token endpoint for a token as user, from a loopback address
// of its own (the failed-login limit is per address), and times it.
func loginFrom(n *Node, ip net.IP, user, pw string) (time.Duration, int, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, n.URL+"/outpost/v1/token?service="+n.opts.Name, nil)
	req.SetBasicAuth(user, pw)
	// Connect first, so that the time is the login's and not the dial's.
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).Dial("tcp", n.Host)
	if err != nil {
		return 0, 0, err
	}
	conn.Close()
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, 0, err
	}
	resp.Body.Close()
	return time.Since(start), resp.StatusCode, nil
}

// TestHostileRegistryRequests: what a client with a public certificate, a client
// token, or a child's sync token may try against a node, over real HTTP on a real
// tree: forged registry tokens, cross-repository mounts from a repository it may
// not pull spelled every way distribution reads them, a sync token speaking for
// another node, a binding to a token that does not exist, and the time a refused
// login takes. Every refusal row says why.
func TestHostileRegistryRequests(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	sitea := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"team/*"}})
	root.MustCLI(t, "node", "create", "linea", "--parent", "sitea", "--mode", "ReadWrite", "--repository", "team/*")
	aPw := csField(sitea.opts.ConnectionString, "SyncTokenPassword")
	pusherPw := createToken(t, root, "pusher", "team/*=pull,push")
	readerPw := createToken(t, root, "reader", "team/app=pull")

	secret := content.Image(t, 1)
	if err := remote.Write(mustRef(t, root, "secret/app:1"), secret, remote.WithAuth(basic("admin", AdminToken))); err != nil {
		t.Fatal(err)
	}
	layers, err := secret.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	secretBlob := ld.String()
	if err := pushAs(t, root, "team/app:1", basic("admin", AdminToken)); err != nil {
		t.Fatal(err)
	}
	shared := content.Image(t, 1)
	if err := remote.Write(mustRef(t, root, "team/shared:1"), shared, remote.WithAuth(basic("admin", AdminToken))); err != nil {
		t.Fatal(err)
	}
	sl, _ := shared.Layers()
	sd, _ := sl[0].Digest()

	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := nodeKid(t, root)
	bearer := func(tok string) func() error {
		return func() error {
			req, _ := http.NewRequest(http.MethodGet, root.URL+"/v2/_catalog", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			return httpCall(req, http.StatusOK)
		}
	}
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"`+kid+`"}`)) + "." +
		strings.Split(selfSignedToken(t, root, attacker, events.ReplicaUser, false, nil), ".")[1] + "."

	who := map[string]authn.AuthConfig{"pusher": {Username: "pusher", Password: pusherPw}, "admin": {Username: "admin", Password: AdminToken}}
	// mountedLink is where distribution's storage links a blob into team/mounted.
	mountedLink := func(d string) string {
		return filepath.Join(root.Data(), "registry/docker/registry/v2/repositories/team/mounted/_layers/sha256",
			strings.TrimPrefix(d, "sha256:"), "link")
	}
	mount := func(query, contentType string, body []byte, want int) func() error {
		return func() error {
			req, _ := http.NewRequest(http.MethodPost, root.URL+"/v2/team/mounted/blobs/uploads/?"+query, bytes.NewReader(body))
			req.SetBasicAuth("pusher", pusherPw)
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			callErr := httpCall(req, want)
			link := mountedLink(secretBlob)
			if _, err := os.Stat(link); err == nil {
				return fmt.Errorf("MOUNTED the secret blob: %s exists; the request answered %v", link, callErr)
			}
			if err := blobLinked(root, "team/mounted", secretBlob, who); err != nil {
				return fmt.Errorf("MOUNTED the secret blob (%v); the request answered %v", err, callErr)
			}
			if callErr == nil {
				return fmt.Errorf("no mount: an ordinary upload started (202)")
			}
			return callErr
		}
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("from", "secret/app")
	_ = mw.Close()
	pushWithOrigin := func(origin, repo string) error {
		r, err := name.ParseReference(root.Host+"/"+repo, name.Insecure)
		if err != nil {
			return err
		}
		return remote.Write(r, content.Image(t, 1), remote.WithAuth(basic("sitea-sync", aPw)),
			remote.WithTransport(originTransport{origin, instanceOf(t, sitea)}), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	}
	uploadWithOrigin := func(origin string) func() error {
		return func() error {
			req, _ := http.NewRequest(http.MethodPost, root.URL+"/v2/team/spoofed/blobs/uploads/", nil)
			req.SetBasicAuth("sitea-sync", aPw)
			req.Header.Set(events.HeaderOrigin, origin)
			req.Header.Set(events.HeaderInstance, instanceOf(t, sitea))
			if err := httpCall(req, http.StatusAccepted); err != nil {
				return err
			}
			return pushWithOrigin(origin, "team/spoofed:1")
		}
	}
	adminCall := func(method, path, body string, want int) error {
		req, _ := http.NewRequest(method, root.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+AdminToken)
		return httpCall(req, want)
	}
	form := "application/x-www-form-urlencoded"
	m := &authMatrix{t: t}
	m.run([]authAttempt{
		{name: "a registry token with an x5c chain to the attacker's CA, for the replication user", refuse: true, want: `header field "x5c" is not accepted`,
			do: bearer(selfSignedToken(t, root, attacker, events.ReplicaUser, false, map[jose.HeaderKey]any{"x5c": x5cChain(t, attacker)}))},
		{name: "an x5c chain beside the node's kid", refuse: true, want: `header field "x5c" is not accepted`,
			do: bearer(selfSignedToken(t, root, attacker, "admin", false, map[jose.HeaderKey]any{"x5c": x5cChain(t, attacker), "kid": kid}))},
		{name: "a jwk header with the attacker's key", refuse: true, want: `header field "jwk" is not accepted`,
			do: bearer(selfSignedToken(t, root, attacker, events.ReplicaUser, true, nil))},
		{name: "the node's kid, signed by the attacker", refuse: true, want: "bad signature for key",
			do: bearer(selfSignedToken(t, root, attacker, events.ReplicaUser, false, map[jose.HeaderKey]any{"kid": kid}))},
		{name: "alg none", refuse: true, want: `algorithm "none": only ES256`, do: bearer(none)},
		{name: "the node's own token for the pusher (control)",
			do: func() error {
				return bearerGet(root, "/v2/team/app/tags/list", registryToken(t, root, "pusher", pusherPw, "repository:team/app:pull"))
			}},

		{name: "mount from secret/app in the query", refuse: true, want: "ordinary upload",
			do: mount("mount="+secretBlob+"&from=secret/app", "", nil, http.StatusAccepted)},
		{name: "mount with from in a form body", refuse: true, want: "a form body (Content-Type application/x-www-form-urlencoded) is not accepted",
			do: mount("mount="+secretBlob, form, []byte("from=secret/app"), http.StatusCreated)},
		{name: "mount with from in a form body with a charset", refuse: true, want: "is not accepted",
			do: mount("mount="+secretBlob, form+"; charset=UTF-8", []byte("from=secret/app"), http.StatusCreated)},
		{name: "mount with an allowed from in the query and the secret in the body", refuse: true, want: "is not accepted",
			do: mount("mount="+secretBlob+"&from=team/app", form, []byte("from=secret/app"), http.StatusCreated)},
		{name: "mount with from in a multipart body", refuse: true, want: "a form body (Content-Type multipart/form-data) is not accepted",
			do: mount("mount="+secretBlob, mw.FormDataContentType(), mp.Bytes(), http.StatusCreated)},
		{name: "mount with from twice in the query", refuse: true, want: `query parameter "from" given 2 times`,
			do: mount("mount="+secretBlob+"&from=team/app&from=secret/app", "", nil, http.StatusCreated)},
		{name: "mount with keys in other cases", refuse: true, want: "ordinary upload",
			do: mount("Mount="+secretBlob+"&From=secret/app&mount="+secretBlob+"&FROM=secret/app", "", nil, http.StatusAccepted)},
		{name: "mount with a percent-encoded key", refuse: true, want: "ordinary upload",
			do: mount("mount="+secretBlob+"&%66rom=secret%2Fapp", "", nil, http.StatusAccepted)},
		{name: "mount from a repository the pusher may pull (control)",
			do: func() error {
				req, _ := http.NewRequest(http.MethodPost, root.URL+"/v2/team/mounted/blobs/uploads/?mount="+sd.String()+"&from=team/shared", nil)
				req.SetBasicAuth("pusher", pusherPw)
				if err := httpCall(req, http.StatusCreated); err != nil {
					return err
				}
				_, err := os.Stat(mountedLink(sd.String()))
				return err
			}},

		{name: "sitea's sync token names the root as origin", refuse: true,
			want: `Outpost-Origin header "root": the sync token of node sitea speaks only for sitea and the nodes under it`,
			do:   uploadWithOrigin("root")},
		{name: "sitea's sync token names a node outside its subtree", refuse: true, want: `Outpost-Origin header "elsewhere"`,
			do: uploadWithOrigin("elsewhere")},
		{name: "sitea's sync token relays for linea, under it (control)",
			do: func() error { return pushWithOrigin("linea", "team/relayed:1") }},
		{name: "sitea's sync token without an origin (control)",
			do: func() error { return pushWithOrigin("", "team/own:1") }},

		{name: "binding a token that does not exist, at update", refuse: true, want: `client token "ghost" does not exist`,
			do: func() error {
				if out, err := root.CLI(t, "node", "update", "sitea", "--add-client-tokens", "ghost"); err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			}},
		{name: "binding a token that does not exist, at create", refuse: true, want: `client token "ghost" does not exist`,
			do: func() error {
				return adminCall(http.MethodPost, "/outpost/v1/nodes",
					`{"name":"siteb","settings":{"mode":"ReadOnly","repositories":["team/*"],"clientTokens":["ghost"]}}`, http.StatusCreated)
			}},
		{name: "binding an existing token (control)",
			do: func() error {
				_, err := root.CLI(t, "node", "update", "sitea", "--add-client-tokens", "reader")
				return err
			}},
	})

	// The events the sync token caused name the right origins.
	origins := map[string]string{}
	for _, e := range eventLog(t, root) {
		if e.Action == events.ActionPush {
			origins[e.Repository] = e.Origin
		}
	}
	for repo, want := range map[string]string{"team/relayed": "linea", "team/own": "sitea"} {
		if origins[repo] != want {
			t.Errorf("push of %s by sitea's sync token: origin %q, want %q", repo, origins[repo], want)
		}
	}
	if o, ok := origins["team/spoofed"]; ok {
		t.Errorf("a refused push left an event (origin %q)", o)
	}

	// A refused login takes as long for an unknown user as for a wrong password:
	// medians of 20 each, interleaved, each from its own loopback address so that
	// none reaches the failed-login limit.
	var unknown, wrong []time.Duration
	for i := range 20 {
		for j, user := range []string{"nosuchuser", "reader"} {
			d, status, err := loginFrom(root, net.IPv4(127, 0, 3, byte(2*i+j+1)), user, readerPw+"x")
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusUnauthorized {
				t.Fatalf("%s with a wrong password: %d, want 401", user, status)
			}
			if user == "reader" {
				wrong = append(wrong, d)
			} else {
				unknown = append(unknown, d)
			}
		}
	}
	slices.Sort(unknown)
	slices.Sort(wrong)
	medUnknown, medWrong := unknown[len(unknown)/2], wrong[len(wrong)/2]
	ratio := float64(medWrong) / float64(medUnknown)
	t.Logf("median refused login at the token endpoint: unknown user %s, wrong password %s (%.2fx)", medUnknown, medWrong, ratio)
	fmt.Printf("median refused login: unknown user %s, wrong password %s (%.2fx)\n", medUnknown, medWrong, ratio)
	if ratio < 0.5 || ratio > 2 {
		t.Errorf("median login: unknown user %s, wrong password %s (%.2fx): the time tells names apart", medUnknown, medWrong, ratio)
	}
	// The limit still holds for one address: the 11th failure is turned away.
	limited := net.IPv4(127, 0, 4, 1)
	var last int
	for range events.FailedLoginBurst + 1 {
		if _, last, err = loginFrom(root, limited, "nosuchuser", "x"); err != nil {
			t.Fatal(err)
		}
	}
	if last != http.StatusTooManyRequests {
		t.Errorf("failure %d from one address: %d, want 429", events.FailedLoginBurst+1, last)
	}

	t.Logf("hostile requests: %d must be refused, %d were; %d must work, %d did", m.mustRefuse, m.refused, m.mustSucceed, m.succeded)
	fmt.Printf("hostile requests: %d must be refused, %d were; %d must work, %d did\n", m.mustRefuse, m.refused, m.mustSucceed, m.succeded)
}
