package events

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterConfig makes the embedded NATS server a member of a JetStream cluster: the
// members of a root tier share one event log, its outboxes and its buckets, each
// kept in Replicas copies. Without it (the default) a node's server stands alone.
type ClusterConfig struct {
	// Name is the cluster's name, the same at every member. Required.
	Name string
	// Listen is the route listener other members connect to, host:port. Default
	// 127.0.0.1:6222; port 0 picks a free port (tests).
	Listen string
	// Advertise is the host:port other members reach this one at, when it is not
	// Listen (a listener on 0.0.0.0, an address behind NAT). Optional.
	Advertise string
	// Routes are the members' route addresses, host:port or nats-route://host:port:
	// one list for every member, this one's own address included (nats-server
	// expects as many members as routes before it elects a meta leader). Own
	// address missing: it is added.
	Routes []string
	// ServerName is this member's name in the cluster, unique per member and stable
	// across restarts (the cluster's peers are these names). Empty: the name kept in
	// the store directory's server-name file, made once from the node's name.
	ServerName string
	// Secret authenticates members to each other: every member holds the same one.
	// It comes from a file or the environment, never the command line. Required, at
	// least 16 characters.
	Secret string
	// CertFile, KeyFile and CAFile make routes TLS: each member presents CertFile and
	// requires of the other a certificate signed by CAFile. All three or none.
	CertFile, KeyFile, CAFile string
	// Replicas is how many copies of every stream and bucket the cluster keeps.
	// Default: min(3, members), members being this one and the distinct Routes.
	Replicas int
	// StartupTimeout bounds the wait at start for the cluster to elect a meta leader,
	// and the retries of stream and bucket creation while it places them. Default 2 min.
	StartupTimeout time.Duration
	// PublishTimeout bounds the retries of one publish across a leader change (the
	// same message id each time). Default 30 s; it must stay below DedupeWindow, or
	// a retry could store an event twice.
	PublishTimeout time.Duration
	// Now and After are the clock of the waits; default the time package's.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Logger tells what a wait waits for; default slog.Default().
	Logger *slog.Logger
}

// Cluster defaults.
const (
	DefaultClusterListen         = "127.0.0.1:6222"
	DefaultClusterStartupTimeout = 2 * time.Minute
	DefaultPublishTimeout        = 30 * time.Second
	// DedupeWindow is how long a stream remembers message ids: a publish retried
	// within it with the same id is stored once.
	DedupeWindow = 2 * time.Minute
	// routeUser is the user name members log in to each other's routes with.
	routeUser = "outpost-route"
	// serverNameFile, in the store directory, keeps a member's server name.
	serverNameFile = "server-name"
	minSecret      = 16
)

// withDefaults fills in what is empty.
func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.Listen == "" {
		c.Listen = DefaultClusterListen
	}
	if c.Replicas == 0 {
		c.Replicas = min(3, c.members())
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = DefaultClusterStartupTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration, naming the setting that is wrong. It checks
// the settings as given; defaults fill in what is empty.
func (c *ClusterConfig) Validate() error {
	d := c.withDefaults()
	switch {
	case c.Name == "":
		return errors.New("cluster: name is empty (the same name at every member)")
	case strings.ContainsAny(c.Name, " \t\r\n.*>"):
		return fmt.Errorf("cluster: name %q: no spaces, dots or wildcards", c.Name)
	case len(c.Secret) < minSecret:
		return fmt.Errorf("cluster: route secret: %d characters, want at least %d (the same secret, from a file, at every member)", len(c.Secret), minSecret)
	case c.ServerName != "" && !validServerName(c.ServerName):
		return fmt.Errorf("cluster: server name %q: 1 to 64 letters, digits, '-' or '_'", c.ServerName)
	case d.StartupTimeout < 0:
		return fmt.Errorf("cluster: startup timeout %s: must be positive", c.StartupTimeout)
	case d.PublishTimeout < 0 || d.PublishTimeout >= DedupeWindow:
		return fmt.Errorf("cluster: publish timeout %s: must be positive and below the %s dedupe window, or a retried publish could be stored twice", c.PublishTimeout, DedupeWindow)
	}
	if _, err := hostPort("listen address", d.Listen); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if c.Advertise != "" {
		if _, err := hostPort("advertise address", c.Advertise); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if _, err := c.routeURLs(); err != nil {
		return err
	}
	tlsSet := 0
	for _, f := range []string{c.CertFile, c.KeyFile, c.CAFile} {
		if f != "" {
			tlsSet++
		}
	}
	if tlsSet != 0 && tlsSet != 3 {
		return errors.New("cluster: route TLS needs all three of cert, key and CA files")
	}
	if d.Replicas < 1 || d.Replicas > 5 {
		return fmt.Errorf("cluster: replicas %d: must be 1 to 5", c.Replicas)
	}
	if c.members() < 2 {
		return errors.New("cluster: the routes name no other member: a cluster has 2 members or more (one list of every member's route address, this one's included)")
	}
	if m := c.members(); d.Replicas > m {
		return fmt.Errorf("cluster: replicas %d: the routes name %d members in all (this one included)", c.Replicas, m)
	}
	return nil
}

// members counts this member and the distinct other members Routes name.
func (c *ClusterConfig) members() int {
	urls, err := c.routeURLs()
	if err != nil {
		return 1
	}
	listen := c.Listen
	if listen == "" {
		listen = DefaultClusterListen
	}
	self := map[string]bool{listen: true}
	if c.Advertise != "" {
		self[c.Advertise] = true
	}
	seen := map[string]bool{}
	for _, u := range urls {
		if !self[u.Host] {
			seen[u.Host] = true
		}
	}
	return 1 + len(seen)
}

// routeURLs parses Routes. A route that carries a credential is refused: the
// secret comes from Secret alone, so that it is never written in a route list.
func (c *ClusterConfig) routeURLs() ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range c.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		raw := r
		if !strings.Contains(r, "://") {
			raw = "nats-route://" + r
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("cluster: route %q: not host:port or nats-route://host:port", r)
		}
		if u.User != nil {
			return nil, fmt.Errorf("cluster: route %q carries a credential: give the route secret in its file only", u.Redacted())
		}
		if u.Scheme != "nats-route" && u.Scheme != "nats" && u.Scheme != "tls" {
			return nil, fmt.Errorf("cluster: route %q: scheme %q, want nats-route", r, u.Scheme)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("cluster: route %q: host:port only", r)
		}
		if _, err := hostPort("route", u.Host); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		out = append(out, u)
	}
	return out, nil
}

// hostPort checks a host:port and returns its port.
func hostPort(what, addr string) (int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want host:port", what, addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("%s %q: port must be 0 to 65535", what, addr)
	}
	if host == "" {
		return 0, fmt.Errorf("%s %q: host is empty (0.0.0.0 listens everywhere, on purpose only)", what, addr)
	}
	return port, nil
}

func validServerName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// serverName returns the member's name: the configured one, or the one kept in
// dir, made once as node-<random> so that two members started from one node name
// differ. A configured name that differs from the kept one is refused: the
// cluster knows this member's store by the old name.
func serverName(dir, configured, node string) (string, error) {
	file := filepath.Join(dir, serverNameFile)
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		kept := strings.TrimSpace(string(b))
		if !validServerName(kept) {
			return "", fmt.Errorf("cluster: %s: %q is not a server name; remove the file to make a new one", file, kept)
		}
		if configured != "" && configured != kept {
			return "", fmt.Errorf("cluster: server name %q, but this store belongs to member %q (%s): a member keeps its name for good", configured, kept, file)
		}
		return kept, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("cluster: server name: %w", err)
	}
	name := configured
	if name == "" {
		r := make([]byte, 4)
		if _, err := rand.Read(r); err != nil {
			return "", fmt.Errorf("cluster: server name: %w", err)
		}
		name = node + "-" + hex.EncodeToString(r)
		if !validServerName(name) {
			name = "member-" + hex.EncodeToString(r)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("cluster: server name: %w", err)
	}
	if err := os.WriteFile(file, []byte(name+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("cluster: server name: %w", err)
	}
	return name, nil
}

// standaloneStore says whether dir holds streams a server made outside any
// cluster. nats-server started as a member deletes such streams as orphans once it
// is current with the meta leader, so a store is never turned into a member's.
func standaloneStore(dir string) bool {
	js := filepath.Join(dir, "jetstream")
	if _, err := os.Stat(filepath.Join(js, server.DEFAULT_SYSTEM_ACCOUNT, "_js_")); err == nil {
		return false // a member's store: the meta group's state is there
	}
	streams, _ := filepath.Glob(filepath.Join(js, "*", "streams", "*"))
	return len(streams) > 0
}

// applyCluster sets the route options of a member.
func applyCluster(opts *server.Options, c ClusterConfig) error {
	host, p, _ := net.SplitHostPort(c.Listen)
	port, _ := strconv.Atoi(p)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts.Cluster = server.ClusterOpts{
		Name: c.Name, Host: host, Port: port, Advertise: c.Advertise,
		Username: routeUser, Password: c.Secret, AuthTimeout: 5,
		// Members come and go: retry routes for good, spaced out.
		ConnectRetries: -1, ConnectBackoff: true,
	}
	if c.CertFile != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: c.CertFile, KeyFile: c.KeyFile, CaFile: c.CAFile, Verify: true})
		if err != nil {
			return fmt.Errorf("cluster: route TLS: %w", err)
		}
		// A member is both ends of routes: it verifies the members it dials
		// against the same CA as those that dial it (nats-server's own route_tls
		// parsing does this; GenTLSConfig alone does not).
		tc.ClientAuth, tc.RootCAs = tls.RequireAndVerifyClientCert, tc.ClientCAs
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 5
	}
	urls, _ := c.routeURLs()
	self := c.Advertise
	if self == "" && port != server.RANDOM_PORT && host != "0.0.0.0" && host != "::" {
		self = c.Listen
	}
	if self != "" && !slices.ContainsFunc(urls, func(u *url.URL) bool { return u.Host == self }) {
		// nats-server counts routes to know how many members to wait for; it
		// recognizes a route to itself and drops it.
		urls = append(urls, &url.URL{Scheme: "nats-route", Host: self})
	}
	for _, u := range urls {
		u := *u
		u.Scheme = "nats-route"
		// The credential is set here, in memory; nats-server logs routes redacted.
		u.User = url.UserPassword(routeUser, c.Secret)
		opts.Routes = append(opts.Routes, &u)
	}
	return nil
}

// ErrNoQuorum says the member's cluster has no meta leader, or this member is not
// current with it: it cannot create, change or (for streams it leads) write streams.
var ErrNoQuorum = errors.New("nats cluster has no quorum")

// ClusterStatus is what a member knows of its cluster's meta group.
type ClusterStatus struct {
	// Name is the cluster's name; empty when the server stands alone.
	Name string
	// Self is this member's server name.
	Self string
	// Leader is the meta leader's server name; empty while there is none.
	Leader string
	// Current says this member is caught up with the leader.
	Current bool
	// Size is how many members the meta group counts; Quorum how many it needs.
	Size, Quorum int
	// Routed names the members this one has a route to.
	Routed []string
	// Offline names the members the meta group knows but has not heard lately.
	Offline []string
	// Following counts, at the leader, the members (itself included) current with
	// it; 0 elsewhere. Below Quorum the leader has lost its quorum before raft
	// notices (that takes 10 s).
	Following int
}

// Clustered says whether the server is a member of a cluster.
func (st ClusterStatus) Clustered() bool { return st.Name != "" }

// Err says what keeps the member from a working cluster, naming what is missing;
// nil when it has a leader and is current with it (or stands alone).
func (st ClusterStatus) Err() error {
	lostQuorum := st.Leader == st.Self && st.Following < st.Quorum
	if !st.Clustered() || (st.Leader != "" && st.Current && !lostQuorum) {
		return nil
	}
	var why string
	switch {
	case st.Leader == "":
		why = "no meta leader elected"
	case lostQuorum:
		why = fmt.Sprintf("meta leader %s (this member) has %d of %d members with it", st.Leader, st.Following, st.Size)
	default:
		why = "this member is not current with meta leader " + st.Leader
	}
	detail := fmt.Sprintf("member %s reaches %d other member(s)", st.Self, len(st.Routed))
	if len(st.Routed) > 0 {
		detail += " (" + strings.Join(st.Routed, ", ") + ")"
	}
	if st.Size > 0 {
		detail += fmt.Sprintf("; a quorum is %d of %d", st.Quorum, st.Size)
	}
	if len(st.Offline) > 0 {
		detail += "; offline: " + strings.Join(st.Offline, ", ")
	}
	return fmt.Errorf("%w: cluster %s: %s: %s", ErrNoQuorum, st.Name, why, detail)
}

// ClusterStatus reads the member's view of its cluster.
func (s *Server) ClusterStatus() ClusterStatus {
	if s.cluster == nil {
		return ClusterStatus{}
	}
	st := ClusterStatus{Name: s.cluster.Name, Self: s.ns.Name(), Current: s.ns.JetStreamIsCurrent()}
	if rz, err := s.ns.Routez(&server.RoutezOptions{}); err == nil {
		for _, r := range rz.Routes {
			if r.RemoteName != "" && !slices.Contains(st.Routed, r.RemoteName) {
				st.Routed = append(st.Routed, r.RemoteName)
			}
		}
		sort.Strings(st.Routed)
	}
	jsz, err := s.ns.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		st.Current = false
		return st
	}
	st.Leader, st.Size, st.Quorum = jsz.Meta.Leader, jsz.Meta.Size, jsz.Meta.QuorumNeeded
	if st.Leader == st.Self {
		st.Following = 1
	}
	for _, p := range jsz.Meta.Replicas {
		if p.Offline && p.Name != st.Self {
			st.Offline = append(st.Offline, p.Name)
		}
		if st.Leader == st.Self && p.Current && !p.Offline {
			st.Following++
		}
	}
	sort.Strings(st.Offline)
	if st.Leader == "" {
		st.Current = false
	}
	return st
}

// waitForCluster waits, with backoff, until the cluster has a meta leader this
// member is current with: members started at once need a moment to find each other
// (about 2 s on one machine), and one started alone waits for the others.
func (s *Server) waitForCluster() error {
	c := *s.cluster
	start := c.Now()
	wait := 50 * time.Millisecond
	var lastLog time.Time
	for {
		st := s.ClusterStatus()
		err := st.Err()
		if err == nil {
			c.Logger.Info("nats cluster: meta leader elected", "cluster", c.Name, "member", st.Self,
				"leader", st.Leader, "members", st.Size, "waited", c.Now().Sub(start).Round(time.Millisecond))
			return nil
		}
		waited := c.Now().Sub(start)
		if waited >= c.StartupTimeout {
			return fmt.Errorf("nats server: gave up after %s: %w (start the other members, or check the routes, the route secret and route TLS)", c.StartupTimeout, err)
		}
		if lastLog.IsZero() || c.Now().Sub(lastLog) >= 5*time.Second {
			c.Logger.Info("nats cluster: waiting for a meta leader", "cluster", c.Name, "member", st.Self,
				"routed", st.Routed, "waited", waited.Round(time.Millisecond), "timeout", c.StartupTimeout, "why", err)
			lastLog = c.Now()
		}
		<-c.After(min(wait, c.StartupTimeout-waited))
		wait = min(2*wait, 2*time.Second)
	}
}

// Placement is how the node's streams and buckets are made: how many copies, and
// how long creation and publishing retry while a cluster elects leaders. The zero
// Placement is a single server's: one copy, one attempt.
type Placement struct {
	Replicas int
	// Create retries stream and bucket creation; Publish retries a publish.
	Create, Publish RetryPolicy
	// caughtUp says whether this member's copy of a stream holds the stream's
	// messages up to last; nil for a single server, whose copy is the stream.
	caughtUp func(stream string, last uint64) bool
}

// Placement is the placement for this server's streams: from its cluster, or a
// single server's.
func (s *Server) Placement() Placement {
	if s.cluster == nil {
		return Placement{Replicas: 1}
	}
	c := *s.cluster
	return Placement{
		caughtUp: s.caughtUp,
		Replicas: c.Replicas,
		// Short attempts: members that create one stream at once find the later
		// requests unanswered (nats-server v2.15) until they ask again.
		Create: RetryPolicy{Timeout: c.StartupTimeout, Attempt: time.Second, Now: c.Now, After: c.After, Logger: c.Logger},
		// A publish to a stopped leader is given up after a second; its retry, same
		// id, goes to the new leader or is found a duplicate.
		Publish: RetryPolicy{Timeout: c.PublishTimeout, Attempt: time.Second, Now: c.Now, After: c.After, Logger: c.Logger},
	}
}

func (p Placement) replicas() int { return max(1, p.Replicas) }

// caughtUp says whether this member's copy of stream holds the messages up to
// last (the leader's last sequence), or it holds no copy. A consumer made without a
// durable (a read of the log) is placed on one member's copy, maybe this one: one
// restarted a moment ago delivers only what it has caught up on, and a reader
// takes the rest for lost. (Raft calls a follower current before its first
// heartbeat from the leader tells it how far behind it is, so that is not asked.)
func (s *Server) caughtUp(stream string, last uint64) bool {
	acc := server.DEFAULT_GLOBAL_ACCOUNT
	if !s.ns.JetStreamIsStreamAssigned(acc, stream) {
		return true
	}
	d, err := s.ns.JszAccount(&server.JSzOptions{Account: acc, Streams: true})
	if err != nil {
		return false
	}
	for _, st := range d.Streams {
		if st.Name == stream {
			return st.State.LastSeq >= last
		}
	}
	return false
}

// errCatchingUp says this member's copy of a stream is not caught up yet.
var errCatchingUp = errors.New("this member's copy of the stream is catching up")

// waitCaughtUp waits, by p's Create policy, until this member's copy of stream
// holds the messages up to last.
func (p Placement) waitCaughtUp(ctx context.Context, stream string, last uint64) error {
	if p.caughtUp == nil {
		return nil
	}
	return p.Create.do(ctx, "catch up "+stream, func(context.Context) error {
		if !p.caughtUp(stream, last) {
			return fmt.Errorf("%s: %w to sequence %d", stream, errCatchingUp, last)
		}
		return nil
	})
}

// serverLogger hands a member's nats-server warnings and errors to the node's log:
// a refused route (wrong secret, a certificate of another CA) shows only there.
// nats-server logs route URLs redacted. Notices (its start-up banner, each route
// made) go at debug level.
type serverLogger struct{ l *slog.Logger }

func (g serverLogger) Noticef(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g serverLogger) Warnf(format string, v ...any)   { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g serverLogger) Fatalf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g serverLogger) Errorf(format string, v ...any)  { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g serverLogger) Debugf(string, ...any)           {}
func (g serverLogger) Tracef(string, ...any)           {}
