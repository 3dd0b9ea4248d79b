// Package notify tells systems outside the tree what changed at a node: webhooks
// defined at the root, filtered by ACR's pattern syntax, delivered at least once
// from a durable JetStream outbox per webhook, as signed CloudEvents.
package notify

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// ErrInvalid marks a webhook definition that breaks a rule; the message names the field.
var ErrInvalid = errors.New("invalid webhook")

// TTL bounds of a webhook's messages, as for a link's messages.
const (
	MinTTL     = events.MinMessageTTL
	MaxTTL     = events.MaxMessageTTL
	DefaultTTL = events.DefaultMessageTTL
)

// Webhook is a receiver of a node's changes, defined at the root.
type Webhook struct {
	// Name is 5 to 50 letters and digits, starting with a letter, like a node's.
	Name string `json:"name"`
	// URL is an http or https endpoint; it gets one POST per event.
	URL string `json:"url"`
	// Patterns select the events: repo:tag[:action] or repo@digest[:action] with *
	// wildcards (ACR's syntax). Any one matching is enough.
	Patterns []string `json:"patterns"`
	// Node limits the webhook to the changes at one node; empty means every node of
	// the tree notifies it of its own changes.
	Node string `json:"node,omitempty"`
	// Secret is the HMAC-SHA256 key the body is signed with. It travels to the nodes
	// that deliver (they sign), and is never shown by the API.
	Secret string `json:"secret,omitempty"`
	// TTL is how long an event waits for the receiver before it is dropped (ISO
	// 8601, P1D to P90D; default P2D).
	TTL string `json:"ttl"`
	// Enabled: a disabled webhook keeps its definition and delivers nothing.
	Enabled bool      `json:"enabled"`
	Created time.Time `json:"created,omitzero"`
	Updated time.Time `json:"updated,omitzero"`
}

var namePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{4,49}$`)

// MinSecretLength is the shortest HMAC secret accepted: shorter ones can be guessed.
const MinSecretLength = 16

// Defaults fills in what was left empty.
func (w *Webhook) Defaults() {
	if w.TTL == "" {
		w.TTL = events.FormatDuration(DefaultTTL)
	}
}

// TTLDuration is the webhook's TTL; DefaultTTL when it cannot be read (Validate
// refuses that).
func (w *Webhook) TTLDuration() time.Duration {
	d, err := events.ParseDuration(w.TTL)
	if err != nil {
		return DefaultTTL
	}
	return d
}

// Validate checks the definition, naming the field that is wrong.
func (w *Webhook) Validate() error {
	if !namePattern.MatchString(w.Name) {
		return fmt.Errorf("%w: name %q: 5 to 50 letters and digits, starting with a letter", ErrInvalid, w.Name)
	}
	if err := validateURL(w.URL); err != nil {
		return fmt.Errorf("%w %s: %v", ErrInvalid, w.Name, err)
	}
	if len(w.Patterns) == 0 {
		return fmt.Errorf("%w %s: patterns: at least one, such as 'hello-world:*:push' or '*:*'", ErrInvalid, w.Name)
	}
	for _, p := range w.Patterns {
		if _, err := ParsePattern(p); err != nil {
			return fmt.Errorf("%w %s: %v", ErrInvalid, w.Name, err)
		}
	}
	if w.Node != "" && !namePattern.MatchString(w.Node) {
		return fmt.Errorf("%w %s: node %q: not a node name (5 to 50 letters and digits, starting with a letter)", ErrInvalid, w.Name, w.Node)
	}
	if len(w.Secret) < MinSecretLength {
		return fmt.Errorf("%w %s: secret: at least %d characters (give it in a file or on stdin)", ErrInvalid, w.Name, MinSecretLength)
	}
	if len(w.Secret) > 1024 {
		return fmt.Errorf("%w %s: secret: at most 1024 characters", ErrInvalid, w.Name)
	}
	d, err := events.ParseDuration(w.TTL)
	if err != nil {
		return fmt.Errorf("%w %s: ttl: %v", ErrInvalid, w.Name, err)
	}
	if d < MinTTL || d > MaxTTL {
		return fmt.Errorf("%w %s: ttl %s: must be from P1D to P90D", ErrInvalid, w.Name, w.TTL)
	}
	return nil
}

func validateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("url %q: %v", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("url %q: scheme must be http or https", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("url %q: no host", s)
	case u.User != nil:
		// Credentials in a URL end up in logs and listings: use the secret instead.
		return fmt.Errorf("url %q: must not carry a user or password", u.Redacted())
	case u.Fragment != "":
		return fmt.Errorf("url %q: must not have a fragment", s)
	}
	return nil
}

// Redacted is the definition as listings show it: everything but the secret.
func (w Webhook) Redacted() Webhook {
	w.Secret = ""
	w.Patterns = append([]string(nil), w.Patterns...)
	return w
}

// InScope reports whether node delivers for the webhook.
func (w *Webhook) InScope(node string) bool { return w.Node == "" || w.Node == node }

// Matches reports whether the webhook wants e (at a node in its scope).
func (w *Webhook) Matches(e *events.Event) bool {
	for _, s := range w.Patterns {
		p, err := ParsePattern(s)
		if err == nil && p.Matches(e) {
			return true
		}
	}
	return false
}

// Action is what a notification says happened: push or delete.
type Action string

// Notification actions. Outpost's tag-delete, manifest-delete and repository-delete
// are all a delete; the event's type and data tell which.
const (
	ActionPush   Action = "push"
	ActionDelete Action = "delete"
)

// ActionOf maps an event's action to a notification's.
func ActionOf(a events.Action) Action {
	if a == events.ActionPush {
		return ActionPush
	}
	return ActionDelete
}

// Pattern is one parsed repo:tag[:action] (or repo@digest[:action]).
type Pattern struct {
	Repository string
	// Tag is the tag glob; empty when the pattern names a digest.
	Tag    string
	Digest string
	// Action is push, delete or * (any).
	Action string
}

var (
	repoGlob   = regexp.MustCompile(`^[a-z0-9*]+(?:(?:[._/-]|__)[a-z0-9*]+)*$|^\*$`)
	tagGlob    = regexp.MustCompile(`^[A-Za-z0-9_*][A-Za-z0-9_.*-]{0,127}$`)
	digestGlob = regexp.MustCompile(`^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$`)
)

// ParsePattern reads repo:tag[:action] or repo@digest[:action]; * in the repository
// or tag matches any run of characters, "/" included.
func ParsePattern(s string) (Pattern, error) {
	bad := func(why string) (Pattern, error) {
		return Pattern{}, fmt.Errorf("pattern %q: %s (want repo:tag[:action] or repo@digest[:action], action push, delete or *; e.g. 'hello-world:*:push', '*:*')", s, why)
	}
	if strings.Count(s, "*") > 8 {
		return bad("more than 8 wildcards")
	}
	var p Pattern
	if repo, after, ok := strings.Cut(s, "@"); ok {
		p.Repository = repo
		alg, tail, _ := strings.Cut(after, ":")
		hex, action, _ := strings.Cut(tail, ":")
		d := alg + ":" + hex
		if !digestGlob.MatchString(d) {
			return bad("digest " + d + " is not sha256:<64 hex> or sha512:<128 hex>")
		}
		p.Digest = d
		p.Action = action
	} else {
		parts := strings.Split(s, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return bad("needs a repository and a tag separated by ':'")
		}
		p.Repository, p.Tag = parts[0], parts[1]
		if len(parts) == 3 {
			p.Action = parts[2]
		}
		if !tagGlob.MatchString(p.Tag) {
			return bad(fmt.Sprintf("tag %q is not a tag or a tag glob", p.Tag))
		}
	}
	if len(p.Repository) == 0 || len(p.Repository) > 255 || !repoGlob.MatchString(p.Repository) {
		return bad(fmt.Sprintf("repository %q is not a repository name or glob (lower case, digits, . _ - /, *)", p.Repository))
	}
	switch p.Action {
	case "":
		p.Action = "*"
	case "*", string(ActionPush), string(ActionDelete):
	default:
		return bad(fmt.Sprintf("action %q is not push, delete or *", p.Action))
	}
	return p, nil
}

// Matches reports whether e falls under the pattern. An event without a tag (a
// push or delete by digest, a repository delete) matches a tag glob only if the
// glob matches the empty tag: "*" does, "v*" does not.
func (p Pattern) Matches(e *events.Event) bool {
	if p.Action != "*" && Action(p.Action) != ActionOf(e.Action) {
		return false
	}
	if !glob(p.Repository, e.Repository) {
		return false
	}
	if p.Digest != "" {
		return e.Digest == p.Digest
	}
	return glob(p.Tag, e.Tag)
}

// glob matches s against pattern, where * is any run of characters.
func glob(pattern, s string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == s
	}
	if !strings.HasPrefix(s, pattern[:star]) {
		return false
	}
	s, pattern = s[star:], pattern[star+1:]
	for i := 0; i <= len(s); i++ {
		if glob(pattern, s[i:]) {
			return true
		}
	}
	return false
}
