package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
)

// registryAuth gives the registry the node's access rules.
type registryAuth struct {
	a *hierarchy.Access
	// site is set at a node that is not the root, where "admin" is no user.
	site bool
}

// errAdminAtSite is why the admin token fails at a site: people try it first.
var errAdminAtSite = fmt.Errorf("%w: the admin token works only at the root; at a site, sign in with a client token bound to it "+
	"(at the root: outpost token create NAME --repository 'REPO=pull,push', then outpost node update SITE --add-client-tokens NAME)",
	registry.ErrBadCredentials)

func (r registryAuth) Login(user, password string) (registry.Principal, error) {
	g, err := r.a.Login(user, password)
	if errors.Is(err, hierarchy.ErrLogin) {
		if r.site && user == "admin" {
			return registry.Principal{}, errAdminAtSite
		}
		return registry.Principal{}, registry.ErrBadCredentials
	}
	return principal(g), unavailable(err)
}

func (r registryAuth) Lookup(user string) (registry.Principal, error) {
	g, err := r.a.Lookup(user)
	return principal(g), unavailable(err)
}

// unavailable tells the registry a check the stores could not answer (503, try
// again) from a refusal.
func unavailable(err error) error {
	if errors.Is(err, hierarchy.ErrUnavailable) {
		return fmt.Errorf("%w: %w", registry.ErrUnavailable, err)
	}
	return err
}

func (r registryAuth) AnonymousPull() bool { return r.a.AnonymousPull() }

func principal(g hierarchy.Grant) registry.Principal {
	return registry.Principal{User: g.User, Peer: g.Child, Admin: g.Admin, Actions: g.Scope.Actions, Fence: g.Fence,
		Relays: func(node string) bool { return slices.Contains(g.Below, node) }}
}

// The operator's token of a node: at the root the admin token (management API, and
// everything in the registry), elsewhere a local operator token that only opens the
// node's own operator endpoints (events, sync now). Each is made at first start.
type tokenFile struct {
	file, key, env, what string
}

var (
	adminTokenFile    = tokenFile{file: "admin-token", key: "admin-token", env: "OUTPOST_ADMIN_TOKEN", what: "Admin token"}
	operatorTokenFile = tokenFile{file: "operator-token", key: "operator-token", env: "OUTPOST_OPERATOR_TOKEN", what: "Operator token"}
)

// operatorToken reads a node's operator token: given (Config.OperatorToken, from
// its variable) at first start, else generated, written to DATA/<file> (0600) and
// announced once. Only its hash is kept in the store; later starts check the file
// or the given token against it.
func operatorToken(ctx context.Context, data, given string, local *events.Bucket, log *slog.Logger, notices io.Writer, tf tokenFile) (string, error) {
	file := filepath.Join(data, tf.file)
	token := given
	if token == "" {
		if b, err := os.ReadFile(file); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	stored, _, err := local.Get(ctx, tf.key)
	switch {
	case errors.Is(err, events.ErrKeyNotFound):
		generated := token == ""
		if generated {
			if token, err = hierarchy.NewPassword(); err != nil {
				return "", err
			}
		}
		h, err := hierarchy.HashPassword(token, time.Now())
		if err != nil {
			return "", err
		}
		if err := local.Put(ctx, tf.key, h.Hash); err != nil {
			return "", err
		}
		if generated {
			if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
				return "", fmt.Errorf("%s: %w", tf.file, err)
			}
			// Where it is, not what it is: stderr often ends up in a log.
			fmt.Fprintf(notices, "%s generated: read it from %s (mode 0600)\n", tf.what, file)
		}
		log.Info(strings.ToLower(tf.what)+" set", "file", file, "generated", generated)
		return token, nil
	case err != nil:
		return "", err
	}
	if token == "" || !(hierarchy.Passwords{Password1: &hierarchy.PasswordHash{Hash: stored}}).Verify(token) {
		return "", fmt.Errorf("%s: neither %s nor %s holds the token this node was set up with", tf.file, tf.env, file)
	}
	return token, nil
}

// sameToken returns a constant-time check against token.
func sameToken(token string) func(string) bool {
	want := sha256.Sum256([]byte(token))
	return func(s string) bool {
		got := sha256.Sum256([]byte(s))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
}

// operatorOnly lets only the node's operator token through.
//
// Wrong tokens from one address are limited like logins: at the root the check is
// the admin token's bcrypt compare.
func (n *Node) operatorOnly(h http.Handler) http.Handler {
	return hierarchy.BearerOnly(h, func(token string) bool { return n.isOperator != nil && n.isOperator(token) },
		n.operatorFailed, "operator", fmt.Sprintf("this endpoint needs the node's operator token (--token or OUTPOST_TOKEN): the admin token at the root, DATA/%s elsewhere", operatorTokenFile.file))
}
