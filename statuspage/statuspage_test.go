package statuspage

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeSource struct{}

func (fakeSource) Overview(context.Context) (Overview, error) {
	now := time.Now()
	return Overview{Self: "root", Root: true, Nodes: []Row{
		{Name: "root", State: "Online", Mode: "ReadWrite", Self: true},
		{Name: "shipone", Parent: "root", Depth: 1, State: "Waiting", Mode: "ReadOnly", LastSync: now.Add(-time.Hour),
			Down: Pending{Known: true, Messages: 3, Bytes: 5 << 20, Rate: 1 << 20}, Window: Window{Known: true, NextStart: now.Add(2 * time.Hour)}},
	}}, nil
}

func (fakeSource) Node(_ context.Context, name string) (NodePage, error) {
	if name != "shipone" {
		return NodePage{}, ErrUnknownNode
	}
	return NodePage{Row: Row{Name: "shipone", State: "Waiting",
		GC:       &GC{Finished: time.Now().Add(-2 * time.Hour), ReclaimedBytes: 3 << 20, ReclaimedBlobs: 12, Next: time.Now().Add(22 * time.Hour)},
		Webhooks: []Webhook{{Name: "arrivals", Pending: 4, Failing: true, LastError: "POST https://ops.example/hook: 503"}}},
		Scope: []string{"fleet/*"}}, nil
}

// A node's page says what its last garbage collection reclaimed and each
// webhook's backlog and last error.
func TestNodePageShowsGCAndWebhooks(t *testing.T) {
	srv := startPage(t, &clock{t: time.Now()})
	b := newBrowser(t, srv.URL)
	b.signIn("the-operator-token")
	resp, body := b.get("/node/shipone")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("node page: %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{"reclaimed 3.0 MiB (12 blobs)", "next in 22h", `data-webhook="arrivals" data-pending="4"`,
		"failing", "POST https://ops.example/hook: 503"} {
		if !strings.Contains(body, want) {
			t.Errorf("node page lacks %q:\n%s", want, body)
		}
	}
}

// clock is a settable clock for session expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func startPage(t *testing.T, c *clock) *httptest.Server {
	cfg := DefaultConfig()
	cfg.Source = fakeSource{}
	cfg.Check = func(tok string) bool { return tok == "the-operator-token" }
	cfg.SessionTTL = time.Hour
	cfg.Now = c.now
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar}, base: base}
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// signIn loads the form and posts token with the form's token.
func (b *browser) signIn(token string) (*http.Response, string) {
	b.t.Helper()
	_, form := b.get("/login")
	m := csrfField.FindStringSubmatch(form)
	if m == nil {
		b.t.Fatalf("no form token in the sign-in form:\n%s", form)
	}
	return b.post("/login", url.Values{"csrf": {m[1]}, "token": {token}})
}

func (b *browser) post(path string, v url.Values) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, v)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestNothingShownWithoutSignIn(t *testing.T) {
	srv := startPage(t, &clock{t: time.Now()})
	b := newBrowser(t, srv.URL)
	for _, path := range []string{"/", "/node/shipone"} {
		resp, body := b.get(path)
		if resp.Request.URL.Path != "/login" || strings.Contains(body, "shipone") {
			t.Errorf("anonymous GET %s: ended at %s, shows shipone: %v", path, resp.Request.URL, strings.Contains(body, "shipone"))
		}
	}
	resp, _ := b.get("/nothing-here")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: %s", resp.Status)
	}
}

func TestSignInRefusals(t *testing.T) {
	srv := startPage(t, &clock{t: time.Now()})
	b := newBrowser(t, srv.URL)
	for _, c := range []struct {
		token  string
		status int
		msg    string
	}{
		{"", http.StatusUnauthorized, "Enter the node&#39;s operator token"},
		{"wrong", http.StatusUnauthorized, "Wrong token: this page takes the node&#39;s operator token"},
	} {
		resp, body := b.signIn(c.token)
		if resp.StatusCode != c.status || !strings.Contains(body, c.msg) || strings.Contains(body, "shipone") {
			t.Errorf("token %q: %s, want %d with %q:\n%s", c.token, resp.Status, c.status, c.msg, body)
		}
	}
	// Without the form's token (another site's form), even the right token fails.
	resp, body := b.post("/login", url.Values{"token": {"the-operator-token"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "came from another site") {
		t.Errorf("no form token: %s\n%s", resp.Status, body)
	}
	// A form token that is not the cookie's.
	_, _ = b.get("/login")
	resp, body = b.post("/login", url.Values{"token": {"the-operator-token"}, "csrf": {strings.Repeat("ab", 32)}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "came from another site") {
		t.Errorf("forged form token: %s\n%s", resp.Status, body)
	}
	// A cross-site Origin is refused too.
	_, form := b.get("/login")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader(url.Values{"token": {"the-operator-token"},
		"csrf": {csrfField.FindStringSubmatch(form)[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	r, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site origin: %s", r.Status)
	}
}

func TestFailedSignInsAreLimited(t *testing.T) {
	srv := startPage(t, &clock{t: time.Now()})
	b := newBrowser(t, srv.URL)
	var last *http.Response
	var body string
	for range 11 {
		last, body = b.signIn("wrong")
	}
	if last.StatusCode != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many failed sign-ins") {
		t.Fatalf("11th failed sign-in: %s, Retry-After %q\n%s", last.Status, last.Header.Get("Retry-After"), body)
	}
	// Limited before the token is checked: the right one waits too.
	if resp, _ := b.signIn("the-operator-token"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right token while limited: %s", resp.Status)
	}
}

func TestSessionCookieAndExpiry(t *testing.T) {
	c := &clock{t: time.Now()}
	srv := startPage(t, c)
	b := newBrowser(t, srv.URL)
	resp, body := b.signIn("the-operator-token")
	if resp.Request.URL.Path != "/" || !strings.Contains(body, "shipone") || !strings.Contains(body, "Waiting") {
		t.Fatalf("signed in: at %s\n%s", resp.Request.URL, body)
	}
	var set string
	for r := resp.Request.Response; r != nil; r = r.Request.Response {
		for _, h := range r.Header.Values("Set-Cookie") {
			if strings.HasPrefix(h, sessionCookie+"=") {
				set = h
			}
		}
	}
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"} {
		if !strings.Contains(set, attr) {
			t.Errorf("session cookie %q lacks %s", set, attr)
		}
	}
	if resp, body := b.get("/node/shipone"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "fleet/*") {
		t.Errorf("node page: %s\n%s", resp.Status, body)
	}
	if resp, _ := b.get("/node/nosuch"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown node: %s", resp.Status)
	}
	c.add(59 * time.Minute)
	if resp, _ = b.get("/"); resp.Request.URL.Path != "/" {
		t.Fatalf("before expiry: sent to %s", resp.Request.URL)
	}
	c.add(2 * time.Minute)
	resp, body = b.get("/")
	if resp.Request.URL.Path != "/login" || !strings.Contains(body, "Your session expired") || strings.Contains(body, "shipone") {
		t.Fatalf("after expiry: at %s\n%s", resp.Request.URL, body)
	}
}

func TestSignOut(t *testing.T) {
	srv := startPage(t, &clock{t: time.Now()})
	b := newBrowser(t, srv.URL)
	_, body := b.signIn("the-operator-token")
	// Without the session's form token sign-out is refused.
	if resp, _ := b.post("/logout", url.Values{"csrf": {"x"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without form token: %s", resp.Status)
	}
	resp, body := b.post("/logout", url.Values{"csrf": {csrfField.FindStringSubmatch(body)[1]}})
	if resp.Request.URL.Path != "/login" || !strings.Contains(body, "Signed out") {
		t.Fatalf("sign-out: at %s\n%s", resp.Request.URL, body)
	}
	if resp, _ := b.get("/"); resp.Request.URL.Path != "/login" {
		t.Fatalf("after sign-out: at %s", resp.Request.URL)
	}
}

func TestDrainEstimate(t *testing.T) {
	for _, c := range []struct {
		p    Pending
		want string
	}{
		{Pending{}, ""},
		{Pending{Known: true}, "drained"},
		{Pending{Known: true, Messages: 2}, "metadata only"},
		{Pending{Known: true, Messages: 2, Bytes: 10 << 20}, "no recent rate"},
		{Pending{Known: true, Messages: 2, Bytes: 10 << 20, Rate: 1 << 20}, "~10s"},
		{Pending{Known: true, Messages: 2, Bytes: 3 << 30, Rate: 1 << 20}, "~51m12s"},
	} {
		if got := c.p.Drain(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.p, got, c.want)
		}
	}
}

func TestCookiesSecureUnderTLS(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Source, cfg.Check, cfg.Secure = fakeSource{}, func(tok string) bool { return tok == "t" }, true
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(p)
	defer srv.Close()
	b := &browser{t: t, c: srv.Client(), base: srv.URL}
	b.c.Jar, _ = cookiejar.New(nil)
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ := b.signIn("t")
	var session string
	for _, h := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(h, sessionCookie+"=") {
			session = h
		}
	}
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(session, "; Secure") || !strings.Contains(session, "HttpOnly") {
		t.Fatalf("sign-in under TLS: %s, session cookie %q", resp.Status, session)
	}
}
