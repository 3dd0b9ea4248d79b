package registry

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/distribution/distribution/v3/registry/auth/token"

	"github.com/outpost-edge/outpost/events"
)

// Who may do what. Every request passes authenticate and authorize before
// distribution sees it: distribution itself runs without an access controller, so
// that Outpost's own routes (referrers, sha512 aliases, repository delete) are
// guarded by the same rules. Registry tokens are JWTs this node signs and verifies
// itself (token.go), against its key set (tokenkeys.go).

// Authenticator checks the credentials clients present at this node.
type Authenticator interface {
	// Login checks a user name and password.
	Login(user, password string) (Principal, error)
	// Lookup re-checks a user named in a registry token this node issued: it fails
	// once the credential no longer works here.
	Lookup(user string) (Principal, error)
	// AnonymousPull reports whether clients without credentials may pull.
	AnonymousPull() bool
}

// ErrBadCredentials is a login with an unknown user or a wrong password: only these
// count toward the failed-login limit of the client's address.
var ErrBadCredentials = errors.New("unknown user or wrong password")

// ErrUnavailable is a login or token check an Authenticator could not decide (its
// stores did not answer): the client hears 503 and tries again; it is not a failed
// login.
var ErrUnavailable = errors.New("access rules unavailable")

// unavailable is the answer to a check that could not be decided.
func unavailable(user string, err error) *authError {
	return &authError{status: http.StatusServiceUnavailable, code: codeUnavailable,
		msg: fmt.Sprintf("user %q: cannot check now, try again: %v", user, err)}
}

// retryAfterUnavailable is the Retry-After of a 503 from the access rules, in seconds.
const retryAfterUnavailable = "1"

// Principal is who a request acts for, and what it may do.
type Principal struct {
	User string
	// Peer is set for a child node's sync token: its writes are replicas from it.
	Peer string
	// Relays, for a Peer, reports whether it may pass on a change first made at node:
	// one of its own descendants. Nil: only changes made at the Peer itself.
	Relays func(node string) bool
	// Admin may do anything, the catalog included.
	Admin bool
	// Actions lists what may be done on a repository: pull, push, delete.
	Actions func(repository string) []string
	// Fence, when set, checks the process instance a request names
	// (events.HeaderInstance): a child's process that is no longer the active one
	// is refused, with the reason.
	Fence func(instance string) error
}

// caller is an authenticated request's principal and the limits of its credential.
type caller struct {
	Principal
	anonymous bool
	internal  bool
	// claims, for a registry token, limit the principal to what the token grants.
	claims *token.ClaimSet
}

// permits reports whether the principal (whatever its token grants) may act on repo.
func (c caller) permits(repo, action string, anonymousPull bool) bool {
	switch {
	case c.internal, c.Admin:
		return true
	case c.anonymous:
		return action == "pull" && anonymousPull
	case c.Actions == nil:
		return false
	}
	return slices.Contains(c.Actions(repo), action)
}

// granted reports whether the credential itself grants the action: always for a
// password, only what was asked and given for a registry token.
func (c caller) granted(typ, name, action string) bool {
	if c.claims == nil {
		return true
	}
	for _, a := range c.claims.Access {
		if a.Type == typ && a.Name == name && (slices.Contains(a.Actions, action) || slices.Contains(a.Actions, "*")) {
			return true
		}
	}
	return false
}

func (c caller) name() string {
	if c.anonymous {
		return "anonymous"
	}
	return c.User
}

type callerKey struct{}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// authError is a refused credential: status and code say how the client hears it.
type authError struct {
	status int
	code   errorCode
	msg    string
	// bearerError is the error= of the challenge, for registry tokens.
	bearerError string
}

func (e *authError) Error() string { return e.msg }

// authenticate finds who a request acts for. With no Authenticator configured the
// registry is open (a library use; outpost serve always configures one).
func (r *Registry) authenticate(req *http.Request) (caller, error) {
	h := req.Header.Get("Authorization")
	if h == "" {
		return caller{anonymous: true}, nil
	}
	if scheme, raw, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "bearer") {
		c, err := r.bearer(req.Context(), raw)
		if err == nil {
			err = r.fence(req, c)
		}
		return c, err
	}
	user, pw, ok := req.BasicAuth()
	if !ok {
		return caller{}, &authError{status: http.StatusUnauthorized, code: codeUnauthorized,
			msg: "Authorization header: want Basic credentials or a Bearer registry token"}
	}
	return r.login(req, user, pw)
}

// login checks a user name and password, within the failed-login limit of the
// client's address.
func (r *Registry) login(req *http.Request, user, pw string) (caller, error) {
	if user == events.ReplicaUser && r.cfg.InternalPassword != "" &&
		subtle.ConstantTimeCompare([]byte(pw), []byte(r.cfg.InternalPassword)) == 1 {
		return caller{Principal: Principal{User: user}, internal: true}, nil
	}
	addr := clientAddr(req)
	if wait, limited := r.limiter.Limited(addr); limited {
		r.authFailure("rate-limited")
		return caller{}, &authError{status: http.StatusTooManyRequests, code: codeTooManyRequests,
			msg: fmt.Sprintf("too many failed logins from %s: try again in %s", addr, wait.Round(1e9))}
	}
	if r.cfg.Auth == nil {
		return caller{}, &authError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: fmt.Sprintf("user %q: unknown user or wrong password", user)}
	}
	p, err := r.cfg.Auth.Login(user, pw)
	if errors.Is(err, ErrUnavailable) {
		r.authFailure("unavailable")
		r.cfg.Logger.Warn("login not checked: access rules unavailable", "user", user, "client", addr, "err", err)
		return caller{}, unavailable(user, err)
	}
	if err != nil {
		if errors.Is(err, ErrBadCredentials) {
			r.limiter.Failed(addr)
		}
		r.authFailure("login")
		// The user name is the client's own input; the password never appears.
		r.cfg.Logger.Warn("login refused", "user", user, "client", addr, "err", err)
		return caller{}, &authError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: fmt.Sprintf("user %q: %v", user, err)}
	}
	c := caller{Principal: p}
	return c, r.fence(req, c)
}

// fence refuses a child's process that is not the one active for the child
// (deactivated, or replaced by another process with the same sync token).
func (r *Registry) fence(req *http.Request, c caller) error {
	if c.Fence == nil {
		return nil
	}
	if err := c.Fence(req.Header.Get(events.HeaderInstance)); err != nil {
		r.authFailure("fenced")
		r.cfg.Logger.Warn("sync token refused: process fenced", "user", c.User, "client", clientAddr(req), "err", err)
		return &authError{status: http.StatusForbidden, code: codeDenied, msg: err.Error()}
	}
	return nil
}

// bearer verifies a registry token and re-checks the user it was issued to.
func (r *Registry) bearer(ctx context.Context, raw string) (caller, error) {
	claims, err := r.tokens.verify(ctx, raw)
	if err != nil {
		r.authFailure("token")
		return caller{}, &authError{status: http.StatusUnauthorized, code: codeUnauthorized, bearerError: "invalid_token",
			msg: fmt.Sprintf("%v: get a new one from the token endpoint", err)}
	}
	c := caller{claims: claims}
	switch claims.Subject {
	case "":
		c.anonymous = true
	case events.ReplicaUser:
		c.internal = true
		c.User = claims.Subject
	default:
		if r.cfg.Auth == nil {
			return caller{}, &authError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: "registry token: no such user here"}
		}
		p, err := r.cfg.Auth.Lookup(claims.Subject)
		if errors.Is(err, ErrUnavailable) {
			r.authFailure("unavailable")
			return caller{}, unavailable(claims.Subject, err)
		}
		if err != nil {
			r.authFailure("token")
			return caller{}, &authError{status: http.StatusUnauthorized, code: codeUnauthorized, bearerError: "invalid_token",
				msg: fmt.Sprintf("registry token for %q: %v", claims.Subject, err)}
		}
		c.Principal = p
	}
	return c, nil
}

func (r *Registry) authFailure(kind string) {
	if r.metrics != nil {
		r.metrics.authFailures.WithLabelValues(kind).Inc()
	}
}

func (r *Registry) anonymousPull() bool {
	return r.cfg.Auth == nil || r.cfg.Auth.AnonymousPull()
}

// access is what a request needs: actions on a repository, or the catalog.
type access struct {
	repo    string
	actions []string
	catalog bool
	// any authenticated caller will do (the /v2/ version check)
	base bool
}

// needs says what a request to the OCI API needs.
func needs(req *http.Request, rt route) []access {
	switch rt.kind {
	case routeBase:
		return []access{{base: true}}
	case routeCatalog:
		return []access{{catalog: true}}
	}
	write := isWrite(req.Method) || rt.kind == routeUpload // an upload's status is the pusher's
	switch {
	case !write:
		return []access{{repo: rt.name, actions: []string{"pull"}}}
	case req.Method == http.MethodDelete && rt.kind != routeUpload:
		return []access{{repo: rt.name, actions: []string{"delete"}}}
	}
	return []access{{repo: rt.name, actions: []string{"pull", "push"}}}
}

// mayMountFrom reports whether a cross-repository mount may read from: a caller
// that may not pull there gets an ordinary upload instead, as the spec allows.
func (r *Registry) mayMountFrom(req *http.Request, from string) bool {
	c, ok := callerFrom(req.Context())
	return !ok || (c.permits(from, "pull", r.anonymousPull()) && c.granted("repository", from, "pull"))
}

// authorize checks a caller against what a request needs. Its error says what is
// missing, and for a client that can fetch a better token, where.
func (r *Registry) authorize(c caller, need []access) *authError {
	if r.cfg.Auth == nil {
		return nil // an open registry
	}
	anon := r.anonymousPull()
	var scopes []string
	for _, n := range need {
		switch {
		case n.base:
			if c.anonymous && c.claims == nil {
				return &authError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: "authentication required"}
			}
		case n.catalog:
			if c.anonymous {
				return &authError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: "authentication required to list repositories",
					bearerError: bearerErrorFor(c)}
			}
		default:
			for _, a := range n.actions {
				if !c.permits(n.repo, a, anon) {
					if c.anonymous {
						return &authError{status: http.StatusUnauthorized, code: codeUnauthorized,
							msg:         fmt.Sprintf("authentication required: %s on %s (anonymous pull is off at node %s)", a, n.repo, r.cfg.Node),
							bearerError: bearerErrorFor(c)}
					}
					return &authError{status: http.StatusForbidden, code: codeDenied,
						msg: fmt.Sprintf("%s may not %s %s at node %s", c.name(), a, n.repo, r.cfg.Node)}
				}
				if !c.granted("repository", n.repo, a) {
					scopes = append(scopes, fmt.Sprintf("repository:%s:%s", n.repo, strings.Join(n.actions, ",")))
					break
				}
			}
		}
	}
	if len(scopes) > 0 {
		return &authError{status: http.StatusUnauthorized, code: codeUnauthorized, bearerError: "insufficient_scope",
			msg: fmt.Sprintf("registry token does not grant %s: ask the token endpoint for it", strings.Join(scopes, " "))}
	}
	return nil
}

func bearerErrorFor(c caller) string {
	if c.claims != nil {
		return "insufficient_scope"
	}
	return ""
}

// challenge writes a refusal: 401s carry the Bearer challenge that sends clients to
// this node's token endpoint for the scope they need.
func (r *Registry) challenge(w http.ResponseWriter, req *http.Request, e *authError, need []access) {
	// Docker's ping reads this header to know it talks to a v2 registry, also on a 401.
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if e.status == http.StatusUnauthorized {
		ch := fmt.Sprintf(`Bearer realm=%q,service=%q`, realmOf(req), r.cfg.Node)
		var scopes []string
		for _, n := range need {
			switch {
			case n.catalog:
				scopes = append(scopes, "registry:catalog:*")
			case n.repo != "":
				scopes = append(scopes, fmt.Sprintf("repository:%s:%s", n.repo, strings.Join(n.actions, ",")))
			}
		}
		if len(scopes) > 0 {
			ch += fmt.Sprintf(`,scope=%q`, strings.Join(scopes, " "))
		}
		if e.bearerError != "" {
			ch += fmt.Sprintf(`,error=%q`, e.bearerError)
		}
		w.Header().Set("WWW-Authenticate", ch)
	}
	e.write(w)
}

// write answers the error, with Retry-After when trying again later helps: after
// the failed-login limit, or the access rules unavailable.
func (e *authError) write(w http.ResponseWriter) {
	switch e.status {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", fmt.Sprint(int(events.FailedLoginEvery.Seconds())))
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfterUnavailable)
	}
	writeError(w, e.status, e.code, e.msg, nil)
}

// realmOf is this node's token endpoint as the client reached the node.
func realmOf(req *http.Request) string {
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + req.Host + TokenPath
}

// guard authenticates and authorizes a request to one of Outpost's own endpoints
// that act on a repository (repository delete).
func (r *Registry) guard(w http.ResponseWriter, req *http.Request, need []access) (*http.Request, bool) {
	c, err := r.authenticate(req)
	if err == nil {
		if e := r.authorize(c, need); e != nil {
			err = e
		}
	}
	var out *http.Request
	if err == nil {
		out, err = r.withCaller(req, c)
	}
	if err != nil {
		var ae *authError
		if !errors.As(err, &ae) {
			ae = &authError{status: http.StatusInternalServerError, code: codeUnknown, msg: err.Error()}
		}
		r.challenge(w, req, ae, need)
		return nil, false
	}
	return out, true
}

// withCaller records the caller, and for replication writers where the change came
// from. A child's sync token speaks for its own subtree only: a write naming an
// origin outside it is refused, since its event would tell every node after this
// one that the change was made somewhere it was not.
func (r *Registry) withCaller(req *http.Request, c caller) (*http.Request, error) {
	ctx := context.WithValue(req.Context(), callerKey{}, c)
	if c.internal || c.Peer != "" {
		rep := replica{from: c.Peer, origin: req.Header.Get(events.HeaderOrigin), internal: c.internal}
		if c.internal {
			rep.from = req.Header.Get(events.HeaderFrom)
		}
		if rep.origin == "" {
			rep.origin = rep.from
		}
		switch relayed := rep.origin == c.Peer || (c.Relays != nil && c.Relays(rep.origin)); {
		case c.internal, relayed:
		case !isWrite(req.Method):
			// A copier sends its event's origin with its reads of the source too; a
			// read makes no event, so the claim is dropped, not refused.
			rep.origin = rep.from
		default:
			return nil, &authError{status: http.StatusForbidden, code: codeDenied,
				msg: fmt.Sprintf("%s header %q: the sync token of node %s speaks only for %s and the nodes under it", events.HeaderOrigin, rep.origin, c.Peer, c.Peer)}
		}
		ctx = context.WithValue(ctx, replicaKey{}, rep)
	}
	return req.WithContext(ctx), nil
}

// replica is who wrote a change that arrived by replication.
type replica struct {
	from, origin string
	internal     bool
}

type replicaKey struct{}

func replicaFrom(ctx context.Context) (replica, bool) {
	r, ok := ctx.Value(replicaKey{}).(replica)
	return r, ok
}
