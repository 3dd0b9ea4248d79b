package notify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/events"
)

func TestPatternMatches(t *testing.T) {
	dg := "sha256:" + strings.Repeat("ab", 32)
	push := func(repo, tag string) *events.Event {
		return &events.Event{Action: events.ActionPush, Repository: repo, Tag: tag, Digest: dg}
	}
	del := func(a events.Action, repo, tag string) *events.Event {
		return &events.Event{Action: a, Repository: repo, Tag: tag}
	}
	cases := []struct {
		pattern string
		event   *events.Event
		want    bool
	}{
		{"hello-world:*:push", push("hello-world", "v1"), true},
		{"hello-world:*:push", del(events.ActionTagDelete, "hello-world", "v1"), false},
		{"hello-world:*:push", push("hello-world2", "v1"), false},
		{"hello-world:*:delete", del(events.ActionTagDelete, "hello-world", "v1"), true},
		{"hello-world:*:delete", del(events.ActionManifestDelete, "hello-world", ""), true},
		{"hello-world:*:delete", del(events.ActionRepositoryDelete, "hello-world", ""), true},
		{"*:*", push("team/app", "1.0"), true},
		{"*:*", del(events.ActionRepositoryDelete, "a/b/c", ""), true},
		{"*:*:*", push("x", ""), true},
		{"team/*:v*", push("team/app/sub", "v2"), true},
		{"team/*:v*", push("team/app", "latest"), false},
		{"team/*:v*", push("team/app", ""), false}, // a push by digest has no tag
		{"team/*:v*", push("other/app", "v1"), false},
		{"app:1.0", push("app", "1.0"), true},
		{"app:1.0", push("app", "1.0.1"), false},
		{"*-prod:*:push", push("web-prod", "x"), true},
		{"app@" + dg, push("app", ""), true},
		{"app@" + dg + ":delete", push("app", ""), false},
		{"app@" + dg + ":push", push("app", "t"), true},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Fatalf("%s: %v", c.pattern, err)
		}
		if got := p.Matches(c.event); got != c.want {
			t.Errorf("%s on %s %s:%s = %v, want %v", c.pattern, c.event.Action, c.event.Repository, c.event.Tag, got, c.want)
		}
	}
}

func TestParsePatternRefusals(t *testing.T) {
	cases := map[string]string{
		"hello-world":               "needs a repository and a tag",
		"a:b:c:d":                   "needs a repository and a tag",
		"hello-world:*:pull":        `action "pull" is not push, delete or *`,
		"Hello:*":                   `repository "Hello" is not a repository name`,
		":latest":                   `repository "" is not`,
		"app:":                      `tag "" is not a tag`,
		"app:bad/tag":               `tag "bad/tag" is not a tag`,
		"app@sha256:1234":           "digest sha256:1234 is not",
		"*:*:*:*:*":                 "needs a repository and a tag",
		"a*b*c*d*e*:f*g*h*i*j":      "more than 8 wildcards",
		"app:latest:push extra":     `action "push extra"`,
		"app::push":                 `tag "" is not a tag`,
		"//:x":                      `repository "//" is not`,
		"app@sha256:" + "zz" + ":p": "digest",
	}
	for in, want := range cases {
		_, err := ParsePattern(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePattern(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

func valid() Webhook {
	return Webhook{Name: "ci1hook", URL: "https://hooks.example.com/outpost?k=1", Patterns: []string{"*:*"},
		Secret: strings.Repeat("s", 32), TTL: "P2D", Enabled: true}
}

func TestWebhookValidate(t *testing.T) {
	w := valid()
	if err := w.Validate(); err != nil {
		t.Fatalf("valid webhook refused: %v", err)
	}
	cases := []struct {
		change func(*Webhook)
		want   string
	}{
		{func(w *Webhook) { w.Name = "ab" }, `name "ab": 5 to 50 letters and digits`},
		{func(w *Webhook) { w.Name = "1hook" }, `name "1hook"`},
		{func(w *Webhook) { w.URL = "ftp://x/y" }, "scheme must be http or https"},
		{func(w *Webhook) { w.URL = "http:///path" }, "no host"},
		{func(w *Webhook) { w.URL = "https://u:p@example.com/" }, "must not carry a user or password"},
		{func(w *Webhook) { w.URL = "://" }, `url "://"`},
		{func(w *Webhook) { w.Patterns = nil }, "patterns: at least one"},
		{func(w *Webhook) { w.Patterns = []string{"*:*", "x:y:z"} }, `pattern "x:y:z": action "z"`},
		{func(w *Webhook) { w.Secret = "short" }, "secret: at least 16 characters"},
		{func(w *Webhook) { w.TTL = "PT1H" }, "ttl PT1H: must be from P1D to P90D"},
		{func(w *Webhook) { w.TTL = "P91D" }, "ttl P91D: must be from P1D to P90D"},
		{func(w *Webhook) { w.TTL = "2 days" }, `ttl: duration "2 days"`},
		{func(w *Webhook) { w.Node = "x" }, `node "x": not a node name`},
	}
	for _, c := range cases {
		w := valid()
		c.change(&w)
		err := w.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate = %v, want ErrInvalid saying %q", err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), w.Secret) && len(w.Secret) >= MinSecretLength {
			t.Errorf("error shows the secret: %v", err)
		}
	}
	if r := valid().Redacted(); r.Secret != "" {
		t.Errorf("Redacted keeps the secret")
	}
	w = Webhook{Name: "abcde", URL: "http://127.0.0.1:1/", Patterns: []string{"*:*"}, Secret: strings.Repeat("k", 16)}
	w.Defaults()
	if err := w.Validate(); err != nil || w.TTLDuration() != DefaultTTL {
		t.Errorf("defaults: %v, ttl %s", err, w.TTLDuration())
	}
	if !w.InScope("ship42") || (&Webhook{Node: "ship43"}).InScope("ship42") {
		t.Errorf("InScope: a tree-wide webhook is everyone's, a per-node one only its node's")
	}
}

func TestSignVerify(t *testing.T) {
	secret := "0123456789abcdef-secret"
	body := []byte(`{"specversion":"1.0","id":"x"}`)
	now := time.Unix(1_800_000_000, 0)
	sig := Sign(secret, now, body)
	if !strings.HasPrefix(sig, "sha256=") || len(sig) != len("sha256=")+64 {
		t.Fatalf("signature %q: want sha256=<64 hex>", sig)
	}
	ts := "1800000000"
	if err := Verify(secret, ts, sig, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("own signature refused: %v", err)
	}
	if err := Verify(secret, ts, sig, append(body, ' '), now, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed body: %v, want ErrBadSignature", err)
	}
	if err := Verify("another-secret-0000", ts, sig, body, now, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other secret: %v, want ErrBadSignature", err)
	}
	// The timestamp is signed: moving it to look fresh breaks the signature.
	if err := Verify(secret, "1800000600", sig, body, now.Add(10*time.Minute), 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("moved timestamp: %v, want ErrBadSignature", err)
	}
	if err := Verify(secret, ts, sig, body, now.Add(10*time.Minute), 5*time.Minute); !errors.Is(err, ErrStale) {
		t.Errorf("replay 10 min later: %v, want ErrStale", err)
	}
	if err := Verify(secret, "soon", sig, body, now, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("unreadable timestamp: %v, want ErrBadSignature", err)
	}
}

func TestCloudEvent(t *testing.T) {
	e := &events.Event{ID: "EVT1", Time: time.Date(2026, 11, 27, 18, 0, 0, 0, time.UTC), Action: events.ActionTagDelete,
		Repository: "app", Tag: "v1", Origin: "root", From: "root"}
	ce := NewCloudEvent("ship42", e)
	b, err := ce.Body()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"specversion":"1.0"`, `"id":"EVT1"`, `"source":"/outpost/ship42"`,
		`"type":"io.outpost.image.delete"`, `"subject":"app:v1"`, `"time":"2026-11-27T18:00:00Z"`,
		`"datacontenttype":"application/json"`, `"action":"tag-delete"`, `"node":"ship42"`, `"origin":"root"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("body %s lacks %s", b, want)
		}
	}
}
