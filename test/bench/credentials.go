package main

// Outpost nodes refuse clients without credentials (anonymous pull is off by
// default, and pushes always need them). The bench signs in everywhere it talks to
// a node's registry API: as admin with the admin token at a root, and with a client
// token bound to every child (benchToken) at the children. Plain distribution has
// no auth: its servers have no credentials, and clients go there anonymously.
//
// The bench's own client and its HTTP calls take a server's credentials directly;
// crane gets them from a Docker config file (DOCKER_CONFIG), regsync from its own
// config. /metrics, /healthz and /readyz need none.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

const (
	// adminUser signs in with the admin token, at a root only.
	adminUser = "admin"
	// benchToken is the client token the cluster creates at the root and binds to
	// every child it defines: every action on every repository.
	benchToken = "bench"
)

// credentials are what a client signs in with at one server; the zero value is
// none (plain distribution).
type credentials struct {
	user, password string
}

func (c credentials) none() bool { return c.user == "" }

// adminCredentials are a root's admin sign-in.
func adminCredentials(token string) credentials {
	return credentials{user: adminUser, password: token}
}

// newAdminToken is a fresh admin token for a root (OUTPOST_ADMIN_TOKEN).
func newAdminToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return "bench-" + hex.EncodeToString(b[:])
}

// rootOptions are the serve options of a root with the admin token: the token in
// its environment, and its admin credentials for the clients.
func rootOptions(token string, args ...string) outpostOptions {
	return outpostOptions{args: args, env: []string{"OUTPOST_ADMIN_TOKEN=" + token}, creds: adminCredentials(token)}
}

// authenticator is what go-containerregistry signs in with: basic credentials,
// which its transport trades for a registry token at the node's token endpoint.
func (c credentials) authenticator() authn.Authenticator {
	if c.none() {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{Username: c.user, Password: c.password})
}

// authorize signs a raw HTTP request in with basic auth, if there are credentials.
func (c credentials) authorize(req *http.Request) {
	if !c.none() {
		req.SetBasicAuth(c.user, c.password)
	}
}

// dockerConfigEnv writes dir/config.json with the credentials of the servers that
// have any, and returns the environment that points Docker-config readers (crane)
// at it.
func dockerConfigEnv(dir string, servers ...*server) ([]string, error) {
	auths := map[string]map[string]string{}
	for _, s := range servers {
		if s.creds.none() {
			continue
		}
		auths[s.addr] = map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte(s.creds.user + ":" + s.creds.password)),
		}
	}
	data, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	return []string{"DOCKER_CONFIG=" + dir}, nil
}

// regsyncCreds is the creds section of a regsync config: every server plain http,
// with user and pass where it has credentials.
func regsyncCreds(servers ...*server) string {
	var b strings.Builder
	b.WriteString("creds:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "  - registry: %s\n    tls: disabled\n", s.addr)
		if !s.creds.none() {
			fmt.Fprintf(&b, "    user: %s\n    pass: %s\n", yamlString(s.creds.user), yamlString(s.creds.password))
		}
	}
	return b.String()
}

// yamlString quotes s for YAML: a JSON string is a YAML double-quoted scalar.
func yamlString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// clientCredentials are benchToken's credentials, for a child it is bound to. The
// token is created at the root on first use; its password is shown only then.
func (cl *cluster) clientCredentials(ctx context.Context) (credentials, error) {
	if cl.clientPassword == "" {
		out, err := cl.cli(ctx, "token", "create", benchToken, "--repository", "*=pull,push,delete")
		if err != nil {
			return credentials{}, err
		}
		var v struct {
			Password string `json:"password"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Password == "" {
			return credentials{}, fmt.Errorf("token create %s: no password in %q (%v)", benchToken, strings.TrimSpace(out), err)
		}
		cl.clientPassword = v.Password
	}
	return credentials{user: benchToken, password: cl.clientPassword}, nil
}
