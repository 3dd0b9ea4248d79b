package hierarchy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/notify"
)

// Webhooks are defined at the root and travel down with the config, like client
// tokens: each node receives the tree-wide webhooks and those scoped to a node of
// its subtree (it delivers the first kind and its own, and relays the rest).

// WebhookStore keeps webhook definitions in the node's OUTPOST_WEBHOOKS bucket.
type WebhookStore struct {
	records[notify.Webhook]
}

// NewWebhookStore wraps an opened bucket.
func NewWebhookStore(b *events.Bucket) *WebhookStore {
	return &WebhookStore{records[notify.Webhook]{bucket: b, kind: "webhook", key: func(w *notify.Webhook) string { return w.Name }}}
}

var _ notify.Source = (*WebhookStore)(nil)

// Replace makes the local copy exactly what the parent sent. A parent's copy is
// checked like a definition: a bad one is not stored, and does not hold up the
// rest of the sync.
func (s *WebhookStore) Replace(ctx context.Context, hooks []*notify.Webhook) error {
	return s.replace(ctx, hooks, func(w *notify.Webhook) bool { return w.Validate() == nil })
}

// webhooksFor lists the webhooks a subtree needs: tree-wide ones and those scoped
// to one of its nodes. Nil store: none.
func webhooksFor(ctx context.Context, s *WebhookStore, subtree []*Node) ([]*notify.Webhook, error) {
	if s == nil {
		return nil, nil
	}
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	in := map[string]bool{}
	for _, n := range subtree {
		in[n.Name] = true
	}
	out := []*notify.Webhook{}
	for _, w := range all {
		if w.Node == "" || in[w.Node] {
			out = append(out, w)
		}
	}
	return out, nil
}

// WebhookCreateRequest is the body of POST /outpost/v1/webhooks.
type WebhookCreateRequest struct {
	Name     string   `json:"name"`
	URL      string   `json:"url"`
	Patterns []string `json:"patterns"`
	Node     string   `json:"node,omitempty"`
	Secret   string   `json:"secret"`
	TTL      string   `json:"ttl,omitempty"`
	// Disabled creates it disabled.
	Disabled bool `json:"disabled,omitempty"`
}

// WebhookUpdateRequest is the body of PATCH /outpost/v1/webhooks/<name>; absent
// fields stay.
type WebhookUpdateRequest struct {
	URL      *string  `json:"url,omitempty"`
	Patterns []string `json:"patterns,omitempty"`
	Secret   *string  `json:"secret,omitempty"`
	TTL      *string  `json:"ttl,omitempty"`
	Enabled  *bool    `json:"enabled,omitempty"`
}

// WebhookAPIConfig configures the root's webhook API.
type WebhookAPIConfig struct {
	Webhooks *WebhookStore
	// Nodes is the tree, to check a webhook's node.
	Nodes *Store
	// Root is the root's name: a webhook may name it too.
	Root string
	Now  func() time.Time
}

// WebhookAPI serves /outpost/v1/webhooks at the root. It checks no token itself:
// mount it behind API.AdminOnly, as the rest of the management API. Its answers
// never carry a secret.
type WebhookAPI struct {
	cfg WebhookAPIConfig
}

// NewWebhookAPI returns the webhook API.
func NewWebhookAPI(cfg WebhookAPIConfig) *WebhookAPI {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &WebhookAPI{cfg: cfg}
}

func (a *WebhookAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.Trim(strings.TrimPrefix(r.URL.Path, "/outpost/v1/webhooks"), "/")
	ctx := r.Context()
	var (
		out any
		err error
	)
	status := http.StatusOK
	switch {
	case name == "" && r.Method == http.MethodGet:
		out, err = a.list(ctx)
	case name == "" && r.Method == http.MethodPost:
		var req WebhookCreateRequest
		if err = decode(r, &req); err == nil {
			out, err = a.create(ctx, req)
			status = http.StatusCreated
		}
	case strings.Contains(name, "/"):
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no such management call: %s %s", r.Method, r.URL.Path))
		return
	case r.Method == http.MethodGet:
		out, err = a.show(ctx, name)
	case r.Method == http.MethodPatch:
		var req WebhookUpdateRequest
		if err = decode(r, &req); err == nil {
			out, err = a.update(ctx, name, req)
		}
	case r.Method == http.MethodDelete:
		if _, err = a.show(ctx, name); err == nil {
			err = a.cfg.Webhooks.Delete(ctx, name)
			out = map[string]string{"deleted": name}
		}
	default:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no such management call: %s %s", r.Method, r.URL.Path))
		return
	}
	writeResult(w, status, out, err)
}

// invalidWebhook is notify's refusal, told apart as ErrInvalid (a 400) with its
// own message.
type invalidWebhook struct{ error }

func (e invalidWebhook) Is(target error) bool { return target == ErrInvalid }
func (e invalidWebhook) Unwrap() error        { return e.error }

// check validates a definition and that the node it names exists.
func (a *WebhookAPI) check(ctx context.Context, wh *notify.Webhook) error {
	if err := wh.Validate(); err != nil {
		return invalidWebhook{err}
	}
	if wh.Node != "" && wh.Node != a.cfg.Root {
		if _, _, err := a.cfg.Nodes.Get(ctx, wh.Node); errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: webhook %s: node %s does not exist: create it first, or leave --node out for the whole tree", ErrInvalid, wh.Name, wh.Node)
		} else if err != nil {
			return err
		}
	}
	return nil
}

func (a *WebhookAPI) create(ctx context.Context, req WebhookCreateRequest) (notify.Webhook, error) {
	now := a.cfg.Now().UTC()
	wh := &notify.Webhook{Name: req.Name, URL: req.URL, Patterns: req.Patterns, Node: req.Node, Secret: req.Secret,
		TTL: req.TTL, Enabled: !req.Disabled, Created: now, Updated: now}
	wh.Defaults()
	if err := a.check(ctx, wh); err != nil {
		return notify.Webhook{}, err
	}
	if err := a.cfg.Webhooks.Create(ctx, wh); err != nil {
		return notify.Webhook{}, err
	}
	return wh.Redacted(), nil
}

func (a *WebhookAPI) update(ctx context.Context, name string, req WebhookUpdateRequest) (notify.Webhook, error) {
	wh, rev, err := a.cfg.Webhooks.Get(ctx, name)
	if err != nil {
		return notify.Webhook{}, err
	}
	if req.URL != nil {
		wh.URL = *req.URL
	}
	if req.Patterns != nil {
		wh.Patterns = req.Patterns
	}
	if req.Secret != nil {
		wh.Secret = *req.Secret
	}
	if req.TTL != nil {
		wh.TTL = *req.TTL
	}
	if req.Enabled != nil {
		wh.Enabled = *req.Enabled
	}
	wh.Updated = a.cfg.Now().UTC()
	if err := a.check(ctx, wh); err != nil {
		return notify.Webhook{}, err
	}
	// At the revision read: a concurrent change is refused, not overwritten.
	if err := a.cfg.Webhooks.Update(ctx, wh, rev); err != nil {
		return notify.Webhook{}, err
	}
	return wh.Redacted(), nil
}

func (a *WebhookAPI) list(ctx context.Context) ([]notify.Webhook, error) {
	all, err := a.cfg.Webhooks.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]notify.Webhook, 0, len(all))
	for _, w := range all {
		out = append(out, w.Redacted())
	}
	return out, nil
}

func (a *WebhookAPI) show(ctx context.Context, name string) (notify.Webhook, error) {
	wh, _, err := a.cfg.Webhooks.Get(ctx, name)
	if err != nil {
		return notify.Webhook{}, err
	}
	return wh.Redacted(), nil
}
