package test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Every node refuses anonymous pushes, and pulls too unless told otherwise. The
// harness signs every client in: the root's admin at the root, a client token bound
// to each child it starts (HarnessToken) there. The credentials go to a Docker
// config file that crane, skopeo and oras read (DOCKER_CONFIG, REGISTRY_AUTH_FILE),
// and to Keychain for the tests' own go-containerregistry calls (Auth).

// HarnessToken is the client token StartChild binds to every child: every action on
// every repository. Tests of access control make their own.
const HarnessToken = "harness"

var creds = struct {
	once sync.Once
	mu   sync.Mutex
	dir  string
	m    map[string]authn.AuthConfig // by host:port
}{m: map[string]authn.AuthConfig{}}

// credentialsDir makes the Docker config directory and points the environment at
// it, once per test process; child processes inherit it.
func credentialsDir(t testing.TB) string {
	creds.once.Do(func() {
		dir, err := os.MkdirTemp("", "outpost-test-auth-")
		if err != nil {
			t.Fatal(err)
		}
		creds.dir = dir
		os.Setenv("DOCKER_CONFIG", dir)
		os.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "config.json"))
	})
	return creds.dir
}

// SignIn records user and password for host: later clients use them there.
func SignIn(t testing.TB, host, user, password string) {
	t.Helper()
	dir := credentialsDir(t)
	creds.mu.Lock()
	defer creds.mu.Unlock()
	creds.m[host] = authn.AuthConfig{Username: user, Password: password}
	data, err := dockerConfig(creds.m)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "config.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "config.json")); err != nil {
		t.Fatal(err)
	}
}

// dockerConfig is a Docker config file signing in to each host of m.
func dockerConfig(m map[string]authn.AuthConfig) ([]byte, error) {
	auths := map[string]map[string]string{}
	for h, a := range m {
		auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(a.Username + ":" + a.Password))}
	}
	return json.Marshal(map[string]any{"auths": auths})
}

type keychain struct{}

// Resolve gives the credentials SignIn recorded for a registry, else anonymous.
func (keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	creds.mu.Lock()
	defer creds.mu.Unlock()
	if a, ok := creds.m[r.RegistryStr()]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

// Keychain resolves what SignIn recorded.
var Keychain authn.Keychain = keychain{}

// Auth is the option that signs a test's own registry calls in.
var Auth = remote.WithAuthFromKeychain(Keychain)

// harnessPassword is the password of HarnessToken at a root, made once per root.
func (n *Node) harnessPassword(t testing.TB) string {
	t.Helper()
	n.mu.Lock()
	pw := n.harnessPw
	n.mu.Unlock()
	if pw != "" {
		return pw
	}
	out := n.MustCLI(t, "token", "create", HarnessToken, "--repository", "*=pull,push,delete")
	var v struct{ Password string }
	if err := jsonOf(out, &v); err != nil || v.Password == "" {
		t.Fatalf("token create %s: no password in %q", HarnessToken, strings.TrimSpace(out))
	}
	n.mu.Lock()
	n.harnessPw = v.Password
	n.mu.Unlock()
	return v.Password
}

// operatorToken is the token the node's operator endpoints take: the admin token at
// the root, the node's own operator token elsewhere.
func (n *Node) operatorToken() string {
	if n.opts.ConnectionString == "" {
		return AdminToken
	}
	b, err := os.ReadFile(filepath.Join(n.opts.Data, "operator-token"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Authorize signs a raw HTTP request in with what SignIn recorded for its host.
func Authorize(req *http.Request) *http.Request {
	creds.mu.Lock()
	defer creds.mu.Unlock()
	if a, ok := creds.m[req.URL.Host]; ok {
		req.SetBasicAuth(a.Username, a.Password)
	}
	return req
}
