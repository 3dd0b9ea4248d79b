package test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/test/content"
)

// authAttempt is one row of the access matrix.
type authAttempt struct {
	name   string
	refuse bool
	// want is part of the refusal's message, when it says why.
	want string
	do   func() error
}

// authMatrix runs attempts and keeps the score.
type authMatrix struct {
	t                     *testing.T
	mustRefuse, refused   int
	mustSucceed, succeded int
}

func (m *authMatrix) run(rows []authAttempt) {
	m.t.Helper()
	for _, r := range rows {
		err := r.do()
		switch {
		case r.refuse:
			m.mustRefuse++
			if err == nil {
				m.t.Errorf("%s: allowed, must be refused", r.name)
				continue
			}
			if r.want != "" && !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(r.want)) {
				m.t.Errorf("%s: refused with %q, want it to say %q", r.name, err, r.want)
				continue
			}
			m.refused++
		default:
			m.mustSucceed++
			if err != nil {
				m.t.Errorf("%s: %v", r.name, err)
				continue
			}
			m.succeded++
		}
	}
}

func basic(user, pw string) authn.Authenticator {
	return authn.FromConfig(authn.AuthConfig{Username: user, Password: pw})
}

func pullAs(n *Node, ref string, a authn.Authenticator, opts ...remote.Option) error {
	r, err := name.ParseReference(n.Host+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, append([]remote.Option{remote.WithAuth(a)}, opts...)...)
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

func pushAs(t *testing.T, n *Node, ref string, a authn.Authenticator, opts ...remote.Option) error {
	r, err := name.ParseReference(n.Host+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(r, content.Image(t, 1), append([]remote.Option{remote.WithAuth(a)}, opts...)...)
}

// bearerGet sends a GET with a raw registry token.
func bearerGet(n *Node, path, tok string) error {
	req, err := http.NewRequest(http.MethodGet, n.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}

// registryToken asks a node's token endpoint for a token.
func registryToken(t *testing.T, n *Node, user, pw, scope string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL+"/outpost/v1/token?service="+n.opts.Name+"&scope="+scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Token == "" {
		t.Fatalf("token endpoint: %s %v", resp.Status, err)
	}
	return v.Token
}

// forgeToken signs a registry token with a node's own key, as only that node could.
func forgeToken(t *testing.T, n *Node, sub string, exp time.Time, access []*token.ResourceActions) string {
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
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", token.GetJWKThumbprint(key.Public())))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(token.ClaimSet{Issuer: "outpost:" + n.opts.Name, Subject: sub,
		Audience: token.AudienceList{n.opts.Name}, Expiration: exp.Unix(), NotBefore: exp.Add(-time.Hour).Unix(),
		IssuedAt: exp.Add(-time.Hour).Unix(), Access: access})
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

func createToken(t *testing.T, root *Node, name string, rules ...string) string {
	t.Helper()
	args := []string{"token", "create", name}
	for _, r := range rules {
		args = append(args, "--repository", r)
	}
	var v struct{ Password string }
	if err := jsonOf(root.MustCLI(t, args...), &v); err != nil || v.Password == "" {
		t.Fatalf("token create %s: no password", name)
	}
	return v.Password
}

// managementCall calls the root's management API with a header.
func managementCall(n *Node, authz string) error {
	req, err := http.NewRequest(http.MethodGet, n.URL+"/outpost/v1/nodes", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", authz)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("management API: %s", resp.Status)
	}
	return nil
}

// gatewayRequest sends a JetStream API request at a parent's gateway as the running
// process of child.
func gatewayRequest(t *testing.T, parent, child *Node, pw, subject string) error {
	nc, err := events.DialParent(parent.Gateway, child.opts.Name+"-sync", pw, child.opts.Name, instanceOf(t, child))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		return err
	}
	var r struct {
		Error *struct{ Description string } `json:"error"`
	}
	if json.Unmarshal(msg.Data, &r) == nil && r.Error != nil {
		return fmt.Errorf("%s", r.Error.Description)
	}
	return nil
}

// TestAccessMatrix: who may do what, over real HTTP and the real gateway, on a
// two-level tree. Every row is an attempt that must be refused or must work.
func TestAccessMatrix(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	// The root holds content in three places: the children's scope and outside it.
	for _, ref := range []string{"team/app:1", "other/app:1", "secret/app:1"} {
		if err := pushAs(t, root, ref, basic("admin", AdminToken)); err != nil {
			t.Fatal(err)
		}
	}
	readerPw := createToken(t, root, "reader", "team/app=pull")
	pusherPw := createToken(t, root, "pusher", "team/*=pull,push")
	tempPw := createToken(t, root, "temp", "team/*=pull")
	sitea := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"team/*", "other/*"}})
	siteb := StartChild(t, root, Child{Name: "siteb", Mode: "ReadOnly", Repositories: []string{"team/*"}})
	root.MustCLI(t, "node", "update", "sitea", "--add-client-tokens", "reader,temp")
	root.MustCLI(t, "node", "update", "siteb", "--add-client-tokens", "pusher", "--anonymous-pull")
	aPw := csField(sitea.opts.ConnectionString, "SyncTokenPassword")
	bPw := csField(siteb.opts.ConnectionString, "SyncTokenPassword")
	Eventually(t, time.Minute, func() error {
		for _, n := range []*Node{sitea, siteb} {
			if err := pullAs(n, "team/app:1", harnessAuth(n)); err != nil {
				return fmt.Errorf("%s: %w", n.opts.Name, err)
			}
		}
		if err := pullAs(sitea, "other/app:1", harnessAuth(sitea)); err != nil {
			return err
		}
		// siteb's anonymous pull reached it.
		return pullAs(siteb, "team/app:1", authn.Anonymous)
	})
	waitForBinding(t, sitea, "team/app:1", "reader", readerPw)

	m := &authMatrix{t: t}
	valid := registryToken(t, sitea, "reader", readerPw, "repository:team/app:pull")
	parts := strings.Split(valid, ".")
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 0x01
	if sig[len(sig)/2] == '-' || sig[len(sig)/2] == '_' {
		sig[len(sig)/2] = 'A'
	}
	tamperedSig := parts[0] + "." + parts[1] + "." + string(sig)
	escalated, _ := json.Marshal(map[string]any{"sub": "reader", "access": []map[string]any{{"type": "repository", "name": "team/app", "actions": []string{"pull", "push"}}}})
	tamperedClaims := parts[0] + "." + base64.RawURLEncoding.EncodeToString(escalated) + "." + parts[2]
	expired := forgeToken(t, sitea, "reader", time.Now().Add(-10*time.Minute),
		[]*token.ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}})
	stillGood := forgeToken(t, sitea, "reader", time.Now().Add(5*time.Minute),
		[]*token.ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}})
	manifest := "/v2/team/app/manifests/1"

	m.run([]authAttempt{
		{name: "anonymous pull at the root (anonymous pull off)", refuse: true, want: "UNAUTHORIZED",
			do: func() error { return pullAs(root, "team/app:1", authn.Anonymous) }},
		{name: "anonymous push at the root", refuse: true, want: "UNAUTHORIZED",
			do: func() error { return pushAs(t, root, "team/anon:1", authn.Anonymous) }},
		{name: "anonymous pull at siteb (anonymous pull on)",
			do: func() error { return pullAs(siteb, "team/app:1", authn.Anonymous) }},
		{name: "anonymous push at siteb", refuse: true,
			do: func() error { return pushAs(t, siteb, "team/anon:1", authn.Anonymous) }},
		{name: "pull-only token pulls its repository at sitea",
			do: func() error { return pullAs(sitea, "team/app:1", basic("reader", readerPw)) }},
		{name: "pull-only token pulls its repository at the root",
			do: func() error { return pullAs(root, "team/app:1", basic("reader", readerPw)) }},
		{name: "pull-only token pulls another repository", refuse: true, want: "DENIED",
			do: func() error { return pullAs(sitea, "other/app:1", basic("reader", readerPw)) }},
		{name: "pull-only token pushes", refuse: true, want: "DENIED",
			do: func() error { return pushAs(t, sitea, "team/app:2", basic("reader", readerPw)) }},
		{name: "pull-only token at a node it is not bound to (unknown there)", refuse: true, want: "wrong password",
			do: func() error { return pullAs(siteb, "team/app:1", basic("reader", readerPw)) }},
		{name: "push token pushes at the root",
			do: func() error { return pushAs(t, root, "team/pushed:1", basic("pusher", pusherPw)) }},
		{name: "push token pushes to a ReadOnly node", refuse: true, want: "read-only",
			do: func() error { return pushAs(t, siteb, "team/app:3", basic("pusher", pusherPw)) }},
		{name: "wrong password", refuse: true, want: "wrong password",
			do: func() error { return pullAs(sitea, "team/app:1", basic("reader", readerPw+"x")) }},
		{name: "unknown user", refuse: true, want: "wrong password",
			do: func() error { return pullAs(sitea, "team/app:1", basic("nobody", readerPw)) }},
		{name: "a valid registry token (control)",
			do: func() error { return bearerGet(sitea, manifest, valid) }},
		{name: "a token signed with the node's key, not expired (control)",
			do: func() error { return bearerGet(sitea, manifest, stillGood) }},
		{name: "an expired registry token", refuse: true, want: "registry token refused: expired at",
			do: func() error { return bearerGet(sitea, manifest, expired) }},
		{name: "a registry token with a tampered signature", refuse: true, want: "registry token refused",
			do: func() error { return bearerGet(sitea, manifest, tamperedSig) }},
		{name: "a registry token with tampered claims", refuse: true, want: "registry token refused",
			do: func() error { return bearerGet(sitea, manifest, tamperedClaims) }},
		{name: "another node's registry token", refuse: true, want: "registry token refused",
			do: func() error { return bearerGet(root, manifest, valid) }},
		{name: "sitea's sync token reads its own outbox (control)",
			do: func() error { return gatewayRequest(t, root, sitea, aPw, "$JS.API.STREAM.INFO.DOWN_sitea") }},
		{name: "sitea's sync token reads siteb's outbox", refuse: true,
			do: func() error { return gatewayRequest(t, root, sitea, aPw, "$JS.API.STREAM.INFO.DOWN_siteb") }},
		{name: "sitea's sync token takes siteb's messages", refuse: true,
			do: func() error {
				return gatewayRequest(t, root, sitea, aPw, "$JS.API.CONSUMER.MSG.NEXT.DOWN_siteb.drain")
			}},
		{name: "sitea's sync token asks for siteb's settings", refuse: true,
			do: func() error { return gatewayRequest(t, root, sitea, aPw, "outpost.ctl.siteb.config") }},
		{name: "sitea's sync token pulls in its scope at the root (control)",
			do: func() error { return pullAs(root, "other/app:1", basic("sitea-sync", aPw), asProcessOf(t, sitea)) }},
		{name: "sitea's sync token pulls outside its scope at the root", refuse: true, want: "DENIED",
			do: func() error { return pullAs(root, "secret/app:1", basic("sitea-sync", aPw), asProcessOf(t, sitea)) }},
		{name: "ReadOnly siteb's sync token pushes at the root", refuse: true, want: "DENIED",
			do: func() error { return pushAs(t, root, "team/fromb:1", basic("siteb-sync", bPw), asProcessOf(t, siteb)) }},
		{name: "a sync token at its own node's registry (only its parent takes it)", refuse: true,
			do: func() error { return pullAs(siteb, "team/app:1", basic("siteb-sync", bPw)) }},
		{name: "admin token at the root's management API (control)",
			do: func() error { return managementCall(root, "Bearer "+AdminToken) }},
		{name: "client token password against the management API", refuse: true,
			do: func() error { return managementCall(root, "Bearer "+pusherPw) }},
		{name: "client token as basic auth against the management API", refuse: true,
			do: func() error {
				return managementCall(root, "Basic "+base64.StdEncoding.EncodeToString([]byte("pusher:"+pusherPw)))
			}},
		{name: "a registry token against the management API", refuse: true,
			do: func() error {
				return managementCall(root, "Bearer "+registryToken(t, root, "pusher", pusherPw, "repository:team/app:pull"))
			}},
		{name: "admin token at a child's registry", refuse: true, want: "wrong password",
			do: func() error { return pullAs(siteb, "team/app:1", basic("admin", AdminToken)) }},
		{name: "temp token before it is deleted (control)",
			do: func() error { return pullAs(sitea, "team/app:1", basic("temp", tempPw)) }},
	})

	// What the CLI shows of a token: its rules and nodes, never a hash or password.
	show := root.MustCLI(t, "token", "show", "reader")
	if !strings.Contains(show, `"team/app"`) || !strings.Contains(show, `"sitea"`) || strings.Contains(show, "hash") || strings.Contains(show, readerPw) {
		t.Errorf("token show reader:\n%s", show)
	}
	if list := root.MustCLI(t, "token", "list"); !strings.Contains(list, "pusher") || !strings.Contains(list, "team/*=pull,push") {
		t.Errorf("token list:\n%s", list)
	}

	// Deleted at the root: refused at sitea after its next sync, and still refused
	// while sitea's parent is out of reach; a registry token issued before goes too.
	tempTok := registryToken(t, sitea, "temp", tempPw, "repository:team/app:pull")
	root.MustCLI(t, "token", "delete", "temp")
	root.MustCLI(t, "token", "update", "pusher", "--enabled=false")
	tempGone := false
	Eventually(t, time.Minute, func() error {
		// Each child syncs on its own: wait for both. A refused login counts toward
		// the failed-login limit, so each is tried only until it is refused.
		if !tempGone && pullAs(sitea, "team/app:1", basic("temp", tempPw)) == nil {
			return fmt.Errorf("temp still works at sitea")
		}
		tempGone = true
		if pullAs(siteb, "team/app:1", basic("pusher", pusherPw)) == nil {
			return fmt.Errorf("pusher still works at siteb")
		}
		return nil
	})
	root.Stop()
	m.run([]authAttempt{
		{name: "a deleted token after the next sync, parent offline", refuse: true, want: "wrong password",
			do: func() error { return pullAs(sitea, "team/app:1", basic("temp", tempPw)) }},
		{name: "a registry token of a deleted token", refuse: true, want: "registry token",
			do: func() error { return bearerGet(sitea, manifest, tempTok) }},
		{name: "a disabled token after the next sync", refuse: true, want: "disabled",
			do: func() error { return pullAs(siteb, "team/app:1", basic("pusher", pusherPw)) }},
		{name: "a bound token while the parent is offline (control)",
			do: func() error { return pullAs(sitea, "team/app:1", basic("reader", readerPw)) }},
	})

	t.Logf("access matrix: %d attempts must be refused, %d were; %d must work, %d did",
		m.mustRefuse, m.refused, m.mustSucceed, m.succeded)
	fmt.Printf("access matrix: %d attempts must be refused, %d were; %d must work, %d did\n",
		m.mustRefuse, m.refused, m.mustSucceed, m.succeded)

	// No secret in any log line.
	secrets := map[string]string{"admin token": AdminToken, "reader": readerPw, "pusher": pusherPw,
		"temp": tempPw, "sitea sync": aPw, "siteb sync": bPw, "registry token": valid}
	for _, n := range []*Node{root, sitea, siteb} {
		out := n.Output()
		for what, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("node %s logged the %s", n.opts.Name, what)
			}
		}
	}
}

// waitForBinding waits until user can pull ref at n: its binding reached n. Until
// then user is unknown there, and each try counts toward the failed-login limit:
// try seldom.
func waitForBinding(t *testing.T, n *Node, ref, user, pw string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); pullAs(n, ref, basic(user, pw)) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("%s's binding never reached %s", user, n.opts.Name)
		}
		time.Sleep(time.Second)
	}
}

// harnessAuth is what the harness signs in to n with.
func harnessAuth(n *Node) authn.Authenticator {
	r, _ := name.NewRegistry(n.Host, name.Insecure)
	a, _ := Keychain.Resolve(r)
	return a
}

// TestFailedLoginsAreRateLimited: after a burst of wrong passwords from one address,
// even the right one waits. Raw requests: clients retry a 429 by themselves.
func TestFailedLoginsAreRateLimited(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	login := func(pw string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, root.URL+"/outpost/v1/token?scope=repository:any/app:pull", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("admin", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := login(AdminToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("right password before the burst: %s", resp.Status)
	}
	// The node gives a try back every FailedLoginEvery: what it must refuse depends
	// on when each login came and when its refusal was counted (after a bcrypt
	// compare, slow under -race on a busy machine). The same limiter, fed the times
	// seen here, is the oracle; a login within 200 ms of a try coming back may go
	// either way.
	oracle := rate.NewLimiter(rate.Every(events.FailedLoginEvery), events.FailedLoginBurst)
	const margin = 200 * time.Millisecond
	near := func(at time.Time) bool {
		tokens := oracle.TokensAt(at)
		return tokens > 1-margin.Seconds()/events.FailedLoginEvery.Seconds() && tokens < 1+margin.Seconds()/events.FailedLoginEvery.Seconds()
	}
	limited, tries := 0, 0
	for i := 0; limited < 2 && i < 40; i++ { // a busy machine needs more than 12
		tries++
		start := time.Now()
		want := oracle.TokensAt(start) < 1
		got := login("wrong").StatusCode == http.StatusTooManyRequests
		if got {
			limited++
		} else {
			oracle.AllowN(time.Now(), 1)
		}
		if got != want && !near(start) {
			t.Errorf("wrong login %d: rate-limited %v, want %v (%.2f tries left)", i+1, got, want, oracle.TokensAt(start))
		}
	}
	start := time.Now()
	resp := login(AdminToken)
	switch want := oracle.TokensAt(start) < 1; {
	case near(start):
	case want && (resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == ""):
		t.Fatalf("right password right after the burst: %s (Retry-After %q), want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	case !want && resp.StatusCode != http.StatusOK:
		t.Fatalf("right password with a try given back: %s, want 200", resp.Status)
	}
	if limited < 2 {
		t.Errorf("%d of %d wrong logins were rate-limited: want a burst of %d, then the limit", limited, tries, events.FailedLoginBurst)
	}
	t.Logf("%d of %d wrong logins were rate-limited, as the limiter fed the same times says; the right one then got %s, Retry-After %q",
		limited, tries, resp.Status, resp.Header.Get("Retry-After"))
}

// clientEnv is the environment a registry client runs in to sign in to host as user
// and nothing else: its own Docker config (read by skopeo, crane, oras and regctl)
// and its own home. With no user, the client is anonymous.
func clientEnv(t *testing.T, host, user, pw string) []string {
	t.Helper()
	dir := t.TempDir()
	m := map[string]authn.AuthConfig{}
	if user != "" {
		m[host] = authn.AuthConfig{Username: user, Password: pw}
	}
	data, err := dockerConfig(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"DOCKER_CONFIG=" + dir, "REGISTRY_AUTH_FILE=" + filepath.Join(dir, "config.json"), "HOME=" + dir}
}

// clientRun runs a registry client with env; its output is the error when it fails,
// so a refusal can be checked for what it says.
func clientRun(t *testing.T, env []string, tool string, args ...string) error {
	out, err := RunEnv(t, clientTimeout, env, tool, args...)
	if err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(tool), err, strings.TrimSpace(out))
	}
	return nil
}

// TestClientsAgainstTokenScopes: the real clients, each with one client token, at a
// child: what the token allows works, the rest is refused, whatever the client.
func TestClientsAgainstTokenScopes(t *testing.T) {
	skopeo, crane, oras, regctl := Tool(t, "skopeo"), Tool(t, "crane"), Tool(t, "oras"), Tool(t, "regctl")
	// podman keeps images in a store of its own: a private one, vfs (no overlay
	// mounts), at a short path (podman refuses a runroot over 50 characters).
	store, err := os.MkdirTemp("", "podman")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(store) })
	podman := func(env []string, args ...string) error {
		return clientRun(t, env, Tool(t, "podman"), append([]string{"--root", filepath.Join(store, "root"),
			"--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}, args...)...)
	}
	root := StartNode(t, NodeOptions{})
	for _, ref := range []string{"team/app:1", "other/app:1"} {
		if err := pushAs(t, root, ref, basic("admin", AdminToken)); err != nil {
			t.Fatal(err)
		}
	}
	readerPw := createToken(t, root, "reader", "team/app=pull")
	pusherPw := createToken(t, root, "pusher", "team/*=pull,push")
	site := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"team/*", "other/*"}})
	ro := StartChild(t, root, Child{Name: "readonly", Mode: "ReadOnly", Repositories: []string{"team/*"}})
	root.MustCLI(t, "node", "update", "sitea", "--add-client-tokens", "reader,pusher")
	root.MustCLI(t, "node", "update", "readonly", "--add-client-tokens", "pusher")
	Eventually(t, time.Minute, func() error {
		for _, n := range []*Node{site, ro} {
			if err := pullAs(n, "team/app:1", harnessAuth(n)); err != nil {
				return fmt.Errorf("%s: %w", n.opts.Name, err)
			}
		}
		return pullAs(site, "other/app:1", harnessAuth(site))
	})
	waitForBinding(t, site, "team/app:1", "reader", readerPw)
	waitForBinding(t, ro, "team/app:1", "pusher", pusherPw)

	src, _ := writeLayout(t, 1)
	reader, pusher := clientEnv(t, site.Host, "reader", readerPw), clientEnv(t, site.Host, "pusher", pusherPw)
	anonymous, pusherAtRO := clientEnv(t, site.Host, "", ""), clientEnv(t, ro.Host, "pusher", pusherPw)
	at := func(n *Node, repo string) string { return n.Host + "/" + repo }
	regctlHost := func(n *Node) string { return "--host=reg=" + n.Host + ",tls=disabled" }
	out := func() string { return filepath.Join(t.TempDir(), "out") }

	m := &authMatrix{t: t}
	m.run([]authAttempt{
		{name: "skopeo pulls with a pull-only token",
			do: func() error {
				return clientRun(t, reader, skopeo, "copy", "--src-tls-verify=false", "docker://"+at(site, "team/app:1"), "oci:"+out()+":1")
			}},
		{name: "skopeo pulls another repository with a pull-only token", refuse: true, want: "denied",
			do: func() error {
				return clientRun(t, reader, skopeo, "copy", "--src-tls-verify=false", "docker://"+at(site, "other/app:1"), "oci:"+out()+":1")
			}},
		{name: "skopeo pushes with a pull-only token", refuse: true, want: "denied",
			do: func() error {
				return clientRun(t, reader, skopeo, "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+at(site, "team/app:skopeo"))
			}},
		{name: "skopeo pushes anonymously", refuse: true, want: "authentication required",
			do: func() error {
				return clientRun(t, anonymous, skopeo, "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+at(site, "team/app:anon"))
			}},
		{name: "skopeo pushes with a push token",
			do: func() error {
				return clientRun(t, pusher, skopeo, "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+at(site, "team/new:skopeo"))
			}},
		{name: "skopeo pushes with a push token to a ReadOnly node", refuse: true, want: "read-only",
			do: func() error {
				return clientRun(t, pusherAtRO, skopeo, "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+at(ro, "team/new:skopeo"))
			}},
		{name: "crane pulls with a pull-only token",
			do: func() error { return clientRun(t, reader, crane, "pull", "--insecure", at(site, "team/app:1"), out()) }},
		{name: "crane pulls another repository with a pull-only token", refuse: true, want: "DENIED",
			do: func() error { return clientRun(t, reader, crane, "pull", "--insecure", at(site, "other/app:1"), out()) }},
		{name: "crane pushes with a pull-only token", refuse: true, want: "DENIED",
			do: func() error {
				return clientRun(t, reader, crane, "push", "--insecure", src, at(site, "team/app:crane"))
			}},
		{name: "crane pushes with a push token",
			do: func() error {
				return clientRun(t, pusher, crane, "push", "--insecure", src, at(site, "team/new:crane"))
			}},
		{name: "oras fetches a manifest with a pull-only token",
			do: func() error {
				return clientRun(t, reader, oras, "manifest", "fetch", "--plain-http", at(site, "team/app:1"))
			}},
		{name: "oras fetches another repository's manifest with a pull-only token", refuse: true, want: "denied",
			do: func() error {
				return clientRun(t, reader, oras, "manifest", "fetch", "--plain-http", at(site, "other/app:1"))
			}},
		{name: "oras copies in with a pull-only token", refuse: true, want: "denied",
			do: func() error {
				return clientRun(t, reader, oras, "cp", "--to-plain-http", "--from-oci-layout", src+":v1", at(site, "team/app:oras"))
			}},
		{name: "oras copies in with a push token to a ReadOnly node", refuse: true, want: "read-only",
			do: func() error {
				return clientRun(t, pusherAtRO, oras, "cp", "--to-plain-http", "--from-oci-layout", src+":v1", at(ro, "team/new:oras"))
			}},
		{name: "regctl reads a digest with a pull-only token",
			do: func() error {
				return clientRun(t, reader, regctl, regctlHost(site), "image", "digest", at(site, "team/app:1"))
			}},
		{name: "regctl reads another repository with a pull-only token", refuse: true, want: "http 403", // a HEAD: no body to say why
			do: func() error {
				return clientRun(t, reader, regctl, regctlHost(site), "image", "digest", at(site, "other/app:1"))
			}},
		{name: "regctl copies in with a pull-only token", refuse: true, want: "denied",
			do: func() error {
				return clientRun(t, reader, regctl, regctlHost(site), "image", "copy", at(site, "team/app:1"), at(site, "team/app:regctl"))
			}},
		{name: "regctl copies in with a push token",
			do: func() error {
				return clientRun(t, pusher, regctl, regctlHost(site), "image", "copy", at(site, "team/app:1"), at(site, "team/new:regctl"))
			}},
		// podman pushes what it pulled in the first row.
		{name: "podman pulls with a pull-only token",
			do: func() error { return podman(reader, "pull", "--tls-verify=false", at(site, "team/app:1")) }},
		{name: "podman pushes with a pull-only token", refuse: true, want: "denied",
			do: func() error {
				return podman(reader, "push", "--tls-verify=false", at(site, "team/app:1"), at(site, "team/app:podman"))
			}},
		{name: "podman pushes with a push token to a ReadOnly node", refuse: true, want: "read-only",
			do: func() error {
				return podman(pusherAtRO, "push", "--tls-verify=false", at(site, "team/app:1"), at(ro, "team/new:podman"))
			}},
		{name: "podman pushes with a push token",
			do: func() error {
				return podman(pusher, "push", "--tls-verify=false", at(site, "team/app:1"), at(site, "team/new:podman"))
			}},
	})
	t.Logf("clients: %d attempts must be refused, %d were; %d must work, %d did",
		m.mustRefuse, m.refused, m.mustSucceed, m.succeded)
	fmt.Printf("clients against token scopes: %d attempts must be refused, %d were; %d must work, %d did\n",
		m.mustRefuse, m.refused, m.mustSucceed, m.succeded)
}
