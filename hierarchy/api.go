package hierarchy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// NodeView is a node as the management API shows it: its definition (never its
// token hashes), its depth, and its last status.
type NodeView struct {
	Name             string     `json:"name"`
	Parent           string     `json:"parent"`
	Depth            int        `json:"depth"`
	Settings         Settings   `json:"settings"`
	Active           bool       `json:"active"`
	Activated        *time.Time `json:"activated,omitempty"`
	ResyncGeneration uint64     `json:"resyncGeneration"`
	Endpoints        Endpoints  `json:"endpoints,omitzero"`
	Status           *Status    `json:"status,omitempty"`
	Created          time.Time  `json:"created"`
	Updated          time.Time  `json:"updated"`
}

func view(t *Tree, n *Node, st map[string]Status) NodeView {
	v := NodeView{Name: n.Name, Parent: n.Parent, Depth: t.Depth(n.Name), Settings: n.Settings,
		Active: n.Activation != nil, ResyncGeneration: n.ResyncGeneration, Endpoints: n.Endpoints,
		Created: n.Created, Updated: n.Updated}
	if n.Activation != nil {
		v.Activated = &n.Activation.Time
	}
	if s, ok := st[n.Name]; ok && n.Activation == nil {
		// It ran, and was deactivated: a process still running for it is fenced.
		s.State = Deactivated
		s.Details = append(s.Details, Detail{Code: ErrDeactivated.Error(), Time: n.Updated,
			Message: "deactivated at the root: a process still running for this node is fenced and moves no content"})
		v.Status = &s
	} else if ok {
		v.Status = &s
	} else if n.Activation == nil {
		v.Status = &Status{Node: n.Name, State: Offline}
	}
	return v
}

// CreateRequest is the body of POST /outpost/v1/nodes.
type CreateRequest struct {
	Name     string   `json:"name"`
	Parent   string   `json:"parent,omitempty"`
	Settings Settings `json:"settings"`
}

// UpdateRequest is the body of PATCH /outpost/v1/nodes/<name>; absent fields stay.
type UpdateRequest struct {
	SyncSchedule       *string   `json:"syncSchedule,omitempty"`
	SyncWindow         *Duration `json:"syncWindow,omitempty"`
	MessageTTL         *Duration `json:"messageTtl,omitempty"`
	LogLevel           *string   `json:"logLevel,omitempty"`
	BandwidthLimit     *int64    `json:"bandwidthLimit,omitempty"`
	AddRepositories    Scope     `json:"addRepositories,omitempty"`
	RemoveRepositories Scope     `json:"removeRepositories,omitempty"`
	Mode               *Mode     `json:"mode,omitempty"`
	Parent             *string   `json:"parent,omitempty"`
	AddClientTokens    []string  `json:"addClientTokens,omitempty"`
	RemoveClientTokens []string  `json:"removeClientTokens,omitempty"`
	AnonymousPull      *bool     `json:"anonymousPull,omitempty"`
}

// Apply changes settings as the request asks.
func (u UpdateRequest) Apply(s *Settings) error {
	if u.Parent != nil {
		return fmt.Errorf("parent cannot change: delete the node and create it again under %s", *u.Parent)
	}
	if u.Mode != nil {
		s.Mode = *u.Mode // CheckUpdate refuses a change, with the reason
	}
	if u.SyncSchedule != nil {
		s.SyncSchedule = *u.SyncSchedule
	}
	if u.SyncWindow != nil {
		s.SyncWindow = *u.SyncWindow
	}
	if u.MessageTTL != nil {
		s.MessageTTL = *u.MessageTTL
	}
	if u.LogLevel != nil {
		s.LogLevel = *u.LogLevel
	}
	if u.BandwidthLimit != nil {
		s.BandwidthLimit = *u.BandwidthLimit
	}
	for _, p := range u.RemoveRepositories {
		i := slices.Index(s.Repositories, p)
		if i < 0 {
			return fmt.Errorf("remove repository %q: the node does not have it", p)
		}
		s.Repositories = slices.Delete(s.Repositories, i, i+1)
	}
	for _, p := range u.AddRepositories {
		if !slices.Contains(s.Repositories, p) {
			s.Repositories = append(s.Repositories, p)
		}
	}
	for _, t := range u.RemoveClientTokens {
		i := slices.Index(s.ClientTokens, t)
		if i < 0 {
			return fmt.Errorf("remove client token %q: it is not bound to the node", t)
		}
		s.ClientTokens = slices.Delete(s.ClientTokens, i, i+1)
	}
	for _, t := range u.AddClientTokens {
		if !slices.Contains(s.ClientTokens, t) {
			s.ClientTokens = append(s.ClientTokens, t)
		}
	}
	if u.AnonymousPull != nil {
		s.AnonymousPull = *u.AnonymousPull
	}
	return nil
}

// API serves the root's management API under /outpost/v1/nodes and
// /outpost/v1/tokens, for the admin token.
type API struct {
	m          *Manager
	isAdmin    func(token string) bool
	staleAfter time.Duration
	// failed limits wrong admin tokens per client address, as logins are limited
	// at the registry and the gateway: each costs a bcrypt compare.
	failed *events.LoginLimiter
}

// NewAPI returns the management API. isAdmin checks the admin token (the tier's:
// AdminToken.Verify); staleAfter is how long a silent node stays Online in listings.
func NewAPI(m *Manager, isAdmin func(token string) bool, staleAfter time.Duration) *API {
	return &API{m: m, isAdmin: isAdmin, staleAfter: staleAfter, failed: events.NewLoginLimiter()}
}

// IsAdmin reports whether token is the admin token.
func (a *API) IsAdmin(token string) bool { return token != "" && a.isAdmin(token) }

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.AdminOnly(http.HandlerFunc(a.serve)).ServeHTTP(w, r)
}

// AdminOnly lets through to h only requests carrying the admin token, with the
// wrong tokens from one address limited like logins (each costs a bcrypt compare):
// every management call at the root goes through it, webhooks too.
func (a *API) AdminOnly(h http.Handler) http.Handler {
	return BearerOnly(h, a.IsAdmin, a.failed, "admin", "the management API needs the admin token (--token or OUTPOST_TOKEN)")
}

// BearerOnly lets through to h only requests whose bearer token check accepts,
// with the wrong tokens from one address limited by failed like logins (a check
// may be a bcrypt compare). what names the token in the 429; refusal is the 401's
// message.
func BearerOnly(h http.Handler, check func(token string) bool, failed *events.LoginLimiter, what, refusal string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, _, splitErr := net.SplitHostPort(r.RemoteAddr)
		if splitErr != nil {
			addr = r.RemoteAddr
		}
		if wait, limited := failed.Limited(addr); limited {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())))
			writeJSONError(w, http.StatusTooManyRequests, fmt.Sprintf("too many wrong %s tokens from %s: try again in %s", what, addr, wait))
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !check(token) {
			failed.Failed(addr)
			writeJSONError(w, http.StatusUnauthorized, refusal)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/outpost/v1/tokens") {
		a.serveTokens(w, r)
		return
	}
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/outpost/v1/nodes"), "/")
	name, action, _ := strings.Cut(rest, "/")
	ctx := r.Context()
	var (
		out any
		err error
	)
	status := http.StatusOK
	switch {
	case name == "" && r.Method == http.MethodGet:
		out, err = a.list(ctx, r.URL.Query().Get("parent"))
	case name == "" && r.Method == http.MethodPost:
		var req CreateRequest
		if err = decode(r, &req); err == nil {
			var n *Node
			if n, err = a.m.Create(ctx, req.Name, req.Parent, req.Settings); err == nil {
				out, err = a.show(ctx, n.Name)
				status = http.StatusCreated
			}
		}
	case action == "" && r.Method == http.MethodGet:
		out, err = a.show(ctx, name)
	case action == "" && r.Method == http.MethodPatch:
		var req UpdateRequest
		if err = decode(r, &req); err == nil {
			if _, err = a.m.Update(ctx, name, req.Apply); err == nil {
				out, err = a.show(ctx, name)
			}
		}
	case action == "" && r.Method == http.MethodDelete:
		err = a.m.Delete(ctx, name)
		out = map[string]string{"deleted": name}
	case action == "deactivate" && r.Method == http.MethodPost:
		if _, err = a.m.Deactivate(ctx, name); err == nil {
			out, err = a.show(ctx, name)
		}
	case action == "resync" && r.Method == http.MethodPost:
		if _, err = a.m.Resync(ctx, name); err == nil {
			out, err = a.show(ctx, name)
		}
	case action == "settings" && r.Method == http.MethodPost:
		gen := 0
		if s := r.URL.Query().Get("generatePassword"); s != "" {
			if gen, err = strconv.Atoi(s); err != nil {
				err = fmt.Errorf("%w: generatePassword %q: must be 1 or 2", ErrInvalid, s)
			}
		}
		if err == nil {
			var cs ConnectionString
			if cs, err = a.m.Settings(ctx, name, gen); err == nil {
				out = map[string]string{"connectionString": cs.String()}
			}
		}
	default:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no such management call: %s %s", r.Method, r.URL.Path))
		return
	}
	writeResult(w, status, out, err)
}

// writeResult writes a call's answer, or its error with the status it maps to.
func writeResult(w http.ResponseWriter, status int, out any, err error) {
	if err != nil {
		code := statusOf(err)
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "5")
		}
		writeJSONError(w, code, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(out)
}

func (a *API) list(ctx context.Context, parent string) ([]NodeView, error) {
	t, err := a.m.Tree(ctx)
	if err != nil {
		return nil, err
	}
	st, err := a.m.Statuses(ctx, a.staleAfter)
	if err != nil {
		return nil, err
	}
	var nodes []*Node
	if parent != "" {
		if !t.exists(parent) {
			return nil, fmt.Errorf("%w: parent %s", ErrNotFound, parent)
		}
		nodes = t.Subtree(parent)
	} else {
		nodes = t.Subtree(t.Root)
	}
	out := make([]NodeView, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, view(t, n, st))
	}
	return out, nil
}

func (a *API) show(ctx context.Context, name string) (NodeView, error) {
	t, err := a.m.Tree(ctx)
	if err != nil {
		return NodeView{}, err
	}
	n, ok := t.Get(name)
	if !ok {
		return NodeView{}, fmt.Errorf("%w: node %s", ErrNotFound, name)
	}
	st, err := a.m.Statuses(ctx, a.staleAfter)
	if err != nil {
		return NodeView{}, err
	}
	return view(t, n, st), nil
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", ErrInvalid, err)
	}
	return nil
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, ErrAlreadyActivated):
		return http.StatusConflict
	case events.IsRetryable(err), errors.Is(err, ErrUnavailable):
		// The stores did not answer in time (a tier's bucket electing a leader):
		// the call is worth making again, not a fault of the server.
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
