// Package statuspage serves a node's status page at `/`: the tree (at the root) or
// the site, its parent link and its subtree, one row per node, and a page per node
// with its repositories and recent events. HTML is rendered on the server with
// html/template from embedded files; a few lines of script refresh the page.
// Nothing is shown without signing in with the node's operator token (the admin
// token at the root).
package statuspage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// Source gives the page its data. The node implements it.
type Source interface {
	Overview(ctx context.Context) (Overview, error)
	// Node describes one node of the tree; ErrUnknownNode if it is not there.
	Node(ctx context.Context, name string) (NodePage, error)
}

// ErrUnknownNode is a Source's answer for a node it does not know.
var ErrUnknownNode = errors.New("no such node")

// Config configures a Page. Zero durations and bounds take DefaultConfig's.
type Config struct {
	Source Source
	// Check says whether a token signs in: the node's operator token.
	Check func(token string) bool
	// Limiter counts failed sign-ins per client address, as the registry's
	// logins are counted; nil: one of its own.
	Limiter *events.LoginLimiter
	// SessionTTL is how long a sign-in lasts. Default 12 h.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept; the oldest goes first. Default 1024.
	MaxSessions int
	// Secure marks the cookies Secure: set it when the node serves TLS.
	Secure bool
	// Refresh is how often the page reloads itself. Default 10 s.
	Refresh time.Duration
	// Version is the build shown in the header; empty: Version().
	Version string
	// Now is the clock sessions expire by. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultConfig has the defaults; Source and Check are the caller's.
func DefaultConfig() Config {
	return Config{SessionTTL: 12 * time.Hour, MaxSessions: 1024, Refresh: 10 * time.Second, Now: time.Now}
}

// Validate names what is missing or wrong.
func (c *Config) Validate() error {
	switch {
	case c.Source == nil:
		return errors.New("status page: no source")
	case c.Check == nil:
		return errors.New("status page: no token check")
	case c.SessionTTL <= 0:
		return fmt.Errorf("status page: session TTL %s: must be positive", c.SessionTTL)
	case c.MaxSessions <= 0:
		return fmt.Errorf("status page: max sessions %d: must be positive", c.MaxSessions)
	case c.Refresh < time.Second:
		return fmt.Errorf("status page: refresh %s: at least 1s", c.Refresh)
	}
	return nil
}

//go:embed templates/*.html templates/style.css
var files embed.FS

// Page is the status page's handler.
type Page struct {
	cfg   Config
	tmpl  map[string]*template.Template
	mux   *http.ServeMux
	build string

	mu       sync.Mutex
	sessions map[string]session
}

type session struct {
	expires time.Time
	created time.Time
	csrf    string
}

const (
	sessionCookie = "outpost_session"
	csrfCookie    = "outpost_csrf"
)

// New builds the page.
func New(cfg Config) (*Page, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Limiter == nil {
		cfg.Limiter = events.NewLoginLimiter()
	}
	// Zero values take the defaults.
	def := DefaultConfig()
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = def.SessionTTL
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = def.MaxSessions
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = def.Refresh
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Page{cfg: cfg, tmpl: map[string]*template.Template{}, sessions: map[string]session{}, build: cfg.Version}
	if p.build == "" {
		p.build = Version()
	}
	funcs := template.FuncMap{
		"ago":     p.ago,
		"at":      func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"bytes":   Bytes,
		"rate":    func(r float64) string { return Bytes(uint64(r)) + "/s" },
		"state":   stateClass,
		"hint":    Hint,
		"lower":   strings.ToLower,
		"seconds": func(d time.Duration) int { return int(d.Seconds()) },
		// The one script: reload every data-refresh seconds, allowed by its hash.
		"refreshScript": func() template.HTML { return template.HTML("<script>" + refreshScript + "</script>") },
	}
	for _, name := range []string{"overview", "node", "login"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("status page template %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	css, err := fs.ReadFile(files, "templates/style.css")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.signedIn(p.serveOverview))
	mux.HandleFunc("GET /node/{name}", p.signedIn(p.serveNode))
	mux.HandleFunc("GET /login", p.serveLoginForm)
	mux.HandleFunc("POST /login", p.serveLogin)
	mux.HandleFunc("POST /logout", p.serveLogout)
	mux.HandleFunc("GET /static/style.css", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(css)
	})
	p.mux = mux
	return p, nil
}

func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// The page runs its own few lines of script and style only, and is never framed.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'sha256-"+refreshScriptHash+"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	p.mux.ServeHTTP(w, r)
}

// refreshScript reloads the page every data-refresh seconds of <body>, unless
// the reader is selecting text.
const refreshScript = `setTimeout(function(){if(!String(window.getSelection())){location.reload()}},1000*document.body.dataset.refresh)`

var refreshScriptHash = func() string {
	h := sha256.Sum256([]byte(refreshScript))
	return base64.StdEncoding.EncodeToString(h[:])
}()

// Version is this build's version, from the build info: the module version, or
// the VCS revision (and "+dirty") of a development build.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return rev + dirty
	}
	if v == "" {
		return "(devel)"
	}
	return v
}

type viewData struct {
	Title     string
	Self      string
	Build     string
	Now       time.Time
	Refresh   time.Duration
	CSRF      string
	SignedIn  bool
	Error     string
	Notice    string
	Overview  Overview
	Node      NodePage
	LoginCSRF string
}

func (p *Page) render(w http.ResponseWriter, status int, name string, d viewData) {
	d.Build, d.Now, d.Refresh = p.build, p.cfg.Now(), p.cfg.Refresh
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := p.tmpl[name].Execute(w, d); err != nil {
		p.cfg.Logger.Warn("status page: render", "page", name, "err", err)
	}
}

func (p *Page) ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := p.cfg.Now().Sub(t)
	if d < 0 {
		return "in " + duration(-d)
	}
	return duration(d) + " ago"
}

// signedIn lets a request with a live session through, and sends any other to
// the sign-in form.
func (p *Page) signedIn(h func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, why := p.session(r)
		if why != "" {
			http.Redirect(w, r, "/login?why="+url.QueryEscape(why), http.StatusSeeOther)
			return
		}
		h(w, r, s)
	}
}

// session finds the request's session, or says why there is none.
func (p *Page) session(r *http.Request) (session, string) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return session{}, "signin"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.sessions[c.Value]
	if !ok {
		return session{}, "signin"
	}
	if !p.cfg.Now().Before(s.expires) {
		delete(p.sessions, c.Value)
		return session{}, "expired"
	}
	return s, ""
}

func (p *Page) serveOverview(w http.ResponseWriter, r *http.Request, s session) {
	ov, err := p.cfg.Source.Overview(r.Context())
	if err != nil {
		p.cfg.Logger.Warn("status page: overview", "err", err)
		p.render(w, http.StatusInternalServerError, "overview", viewData{Title: "Status", CSRF: s.csrf, SignedIn: true,
			Error: "the node could not read its status: " + err.Error()})
		return
	}
	p.render(w, http.StatusOK, "overview", viewData{Title: ov.Self + " status", Self: ov.Self, CSRF: s.csrf, SignedIn: true, Overview: ov})
}

func (p *Page) serveNode(w http.ResponseWriter, r *http.Request, s session) {
	name := r.PathValue("name")
	np, err := p.cfg.Source.Node(r.Context(), name)
	if errors.Is(err, ErrUnknownNode) {
		p.render(w, http.StatusNotFound, "node", viewData{Title: "Unknown node", CSRF: s.csrf, SignedIn: true,
			Error: "no node named " + name + " in this node's tree"})
		return
	}
	if err != nil {
		p.cfg.Logger.Warn("status page: node", "node", name, "err", err)
		p.render(w, http.StatusInternalServerError, "node", viewData{Title: name, CSRF: s.csrf, SignedIn: true,
			Error: "the node could not read " + name + ": " + err.Error()})
		return
	}
	p.render(w, http.StatusOK, "node", viewData{Title: name, Self: np.Server, CSRF: s.csrf, SignedIn: true, Node: np})
}

var loginNotices = map[string]string{
	"expired": "Your session expired: sign in again.",
	"out":     "Signed out.",
}

func (p *Page) serveLoginForm(w http.ResponseWriter, r *http.Request) {
	p.loginForm(w, r, http.StatusOK, "", loginNotices[r.URL.Query().Get("why")])
}

// loginForm shows the form with a fresh form token, also set as a cookie: the
// POST must carry both, which another site's form cannot (double submit; the
// cookie is SameSite=Strict as well).
func (p *Page) loginForm(w http.ResponseWriter, _ *http.Request, status int, errMsg, notice string) {
	tok, err := randomID()
	if err != nil {
		http.Error(w, "status page: no randomness", http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: "/login", HttpOnly: true, Secure: p.cfg.Secure,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	p.render(w, status, "login", viewData{Title: "Sign in", LoginCSRF: tok, Error: errMsg, Notice: notice})
}

func (p *Page) serveLogin(w http.ResponseWriter, r *http.Request) {
	addr := clientAddr(r)
	if wait, limited := p.cfg.Limiter.Limited(addr); limited {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())))
		p.loginForm(w, r, http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins from %s: try again in %s.", addr, wait), "")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		p.loginForm(w, r, http.StatusBadRequest, "The sign-in form could not be read.", "")
		return
	}
	c, err := r.Cookie(csrfCookie)
	form := r.PostForm.Get("csrf")
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(form)) != 1 || !sameOrigin(r) {
		p.loginForm(w, r, http.StatusForbidden, "The sign-in form expired or came from another site: sign in again from this page.", "")
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		p.loginForm(w, r, http.StatusUnauthorized, "Enter the node's operator token (the admin token at the root).", "")
		return
	}
	if !p.cfg.Check(token) {
		p.cfg.Limiter.Failed(addr)
		p.cfg.Logger.Warn("status page: refused sign-in", "client", addr)
		p.loginForm(w, r, http.StatusUnauthorized, "Wrong token: this page takes the node's operator token (the admin token at the root, DATA/operator-token at a site).", "")
		return
	}
	id, err := randomID()
	csrf, err2 := randomID()
	if err != nil || err2 != nil {
		http.Error(w, "status page: no randomness", http.StatusInternalServerError)
		return
	}
	now := p.cfg.Now()
	p.mu.Lock()
	p.prune(now)
	p.sessions[id] = session{expires: now.Add(p.cfg.SessionTTL), created: now, csrf: csrf}
	p.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: p.cfg.Secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(p.cfg.SessionTTL.Seconds())})
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: "", Path: "/login", MaxAge: -1})
	p.cfg.Logger.Info("status page: signed in", "client", addr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (p *Page) serveLogout(w http.ResponseWriter, r *http.Request) {
	s, why := p.session(r)
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if why == "" && (r.ParseForm() != nil || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1 || !sameOrigin(r)) {
		http.Error(w, "sign-out refused: the form did not come from this page", http.StatusForbidden)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		p.mu.Lock()
		delete(p.sessions, c.Value)
		p.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: p.cfg.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login?why=out", http.StatusSeeOther)
}

// prune drops expired sessions and, past the bound, the oldest. Under p.mu.
func (p *Page) prune(now time.Time) {
	for id, s := range p.sessions {
		if !now.Before(s.expires) {
			delete(p.sessions, id)
		}
	}
	for len(p.sessions) >= p.cfg.MaxSessions {
		var oldest string
		var t time.Time
		for id, s := range p.sessions {
			if oldest == "" || s.created.Before(t) {
				oldest, t = id, s.created
			}
		}
		delete(p.sessions, oldest)
	}
}

// sameOrigin refuses a POST whose Origin (browsers send it) names another site.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func randomID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
