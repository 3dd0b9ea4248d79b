package hierarchy

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// TokenCreateRequest is the body of POST /outpost/v1/tokens.
type TokenCreateRequest struct {
	Name         string   `json:"name"`
	Repositories ScopeMap `json:"repositories"`
}

// TokenUpdateRequest is the body of PATCH /outpost/v1/tokens/<name>; absent fields stay.
type TokenUpdateRequest struct {
	// Repositories sets the actions of each pattern named, replacing its rule.
	Repositories ScopeMap `json:"repositories,omitempty"`
	// RemoveRepositories drops the rules of these patterns.
	RemoveRepositories []Pattern `json:"removeRepositories,omitempty"`
	Enabled            *bool     `json:"enabled,omitempty"`
}

// Apply changes a token as the request asks.
func (u TokenUpdateRequest) Apply(t *ClientToken) error {
	for _, p := range u.RemoveRepositories {
		n := len(t.Repositories)
		t.Repositories = deleteRule(t.Repositories, p)
		if len(t.Repositories) == n {
			return fmt.Errorf("%w: remove repository %q: token %s has no rule for it", ErrInvalid, p, t.Name)
		}
	}
	for _, r := range u.Repositories {
		if err := r.Validate(); err != nil {
			return err
		}
		t.Repositories = t.Repositories.Put(r)
	}
	if u.Enabled != nil {
		t.Enabled = *u.Enabled
	}
	return nil
}

func deleteRule(m ScopeMap, p Pattern) ScopeMap {
	out := m[:0]
	for _, r := range m {
		if r.Repository != p {
			out = append(out, r)
		}
	}
	return out
}

// serveTokens serves /outpost/v1/tokens[/<name>[/password]].
func (a *API) serveTokens(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/outpost/v1/tokens"), "/")
	name, action, _ := strings.Cut(rest, "/")
	ctx := r.Context()
	var (
		out any
		err error
	)
	status := http.StatusOK
	switch {
	case name == "" && r.Method == http.MethodGet:
		out, err = a.listTokens(ctx)
	case name == "" && r.Method == http.MethodPost:
		var req TokenCreateRequest
		if err = decode(r, &req); err == nil {
			var t *ClientToken
			var pw string
			if t, pw, err = a.m.CreateToken(ctx, req.Name, req.Repositories); err == nil {
				v := tokenView(t, nil)
				v.Password = pw
				out, status = v, http.StatusCreated
			}
		}
	case action == "" && r.Method == http.MethodGet:
		out, err = a.showToken(ctx, name)
	case action == "" && r.Method == http.MethodPatch:
		var req TokenUpdateRequest
		if err = decode(r, &req); err == nil {
			if _, err = a.m.UpdateToken(ctx, name, req.Apply); err == nil {
				out, err = a.showToken(ctx, name)
			}
		}
	case action == "" && r.Method == http.MethodDelete:
		err = a.m.DeleteToken(ctx, name)
		out = map[string]string{"deleted": name}
	case action == "password" && r.Method == http.MethodPost:
		which, perr := strconv.Atoi(r.URL.Query().Get("generate"))
		if perr != nil {
			err = fmt.Errorf("%w: generate %q: must be 1 or 2", ErrInvalid, r.URL.Query().Get("generate"))
			break
		}
		var pw string
		if pw, err = a.m.TokenPassword(ctx, name, which); err == nil {
			var v TokenView
			if v, err = a.showToken(ctx, name); err == nil {
				v.Password = pw
				out = v
			}
		}
	default:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no such management call: %s %s", r.Method, r.URL.Path))
		return
	}
	writeResult(w, status, out, err)
}

func (a *API) listTokens(ctx context.Context) ([]TokenView, error) {
	ts, err := a.m.Tokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]TokenView, 0, len(ts))
	for _, t := range ts {
		nodes, err := a.m.TokenNodes(ctx, t.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, tokenView(t, nodes))
	}
	return out, nil
}

func (a *API) showToken(ctx context.Context, name string) (TokenView, error) {
	t, err := a.m.Token(ctx, name)
	if err != nil {
		return TokenView{}, err
	}
	nodes, err := a.m.TokenNodes(ctx, name)
	if err != nil {
		return TokenView{}, err
	}
	return tokenView(t, nodes), nil
}
