package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/notify"
	"github.com/outpost-edge/outpost/pipeline"
	"github.com/outpost-edge/outpost/registry"
)

// The node runtime: what a Node assembles from the packages. A root manages
// the tree; a connected node (Config.ConnectionString) gets its settings from its parent
// and runs the link workers. Both route their events to their children.

// Node is one Outpost node: build it with New, run it with Run.
type Node struct {
	runState
	cfg    Config
	name   string
	logger *slog.Logger
	level  *slog.LevelVar

	ns      *events.Server
	nc      *nats.Conn
	metrics *prometheus.Registry
	log     *events.Log
	reg     *registry.Registry
	nodes   *hierarchy.Store
	view    *hierarchy.WatchedNodes // nodes, watched: read per routed event and per control request
	tokens  *hierarchy.TokenStore
	status  *hierarchy.StatusStore
	local   *events.Bucket
	tier    *events.Bucket // what a root tier's members share: token keys, upload secret, admin token
	gateway *hierarchy.Gateway
	// webhooks and notifier: notify.go
	webhooks *hierarchy.WebhookStore
	notifier atomic.Pointer[notify.Dispatcher]

	httpLn     net.Listener
	conns      *connLimiter
	tls        *tls.Config // what the listeners serve, nil for plain
	httpSrv    *http.Server
	handler    atomic.Pointer[http.Handler]
	served     chan error
	internalPw string

	// A connected node's view of itself, refreshed from its parent.
	selfMu sync.RWMutex
	self   *hierarchy.Node

	cs         hierarchy.ConnectionString
	parentConn *nats.Conn
	uplink     *hierarchy.Uplink
	link       *pipeline.Link
	meter      *pipeline.Meter
	ledger     *pipeline.Ledger // writes at risk of the parent's order; nil at the root
	reconcile  chan struct{}
	requested  atomic.Value // the resync generation last asked for: asked once
	// lastOpenSaved is the last window start written to the store, for missed-window
	// recovery after a restart.
	lastOpenSaved time.Time
	// now is the clock windows are read by (Config.Now).
	now func() time.Time
	// gapDetail says messages expired before the link applied them, for the status.
	detailMu  sync.Mutex
	gapDetail *hierarchy.Detail

	admin *hierarchy.API
	// isOperator checks the node's operator token (the admin token at the root).
	isOperator func(string) bool
	// operatorFailed limits wrong operator tokens per client address (access.go).
	operatorFailed *events.LoginLimiter

	// estimator reads what outboxes will move; rates, a connected node's recent
	// link rates (statusview.go, pending.go).
	estimator *contentEstimator
	// outboxes are the children's outboxes, opened once each (outboxes.go).
	outboxes *outboxes
	rates    *rateMeter
	// selfRT reaches the node's own registry over loopback; parentRT the parent's
	// registry, failing over between its endpoints. Built once: each keeps its
	// connections (a transport per request made a TLS handshake per request).
	selfRT, parentRT http.RoundTripper

	// lock holds the data directory for this process (DATA/lock).
	lock *os.File
	// instance is this process's id toward its parent (DATA/instance).
	instance string
	// stopWork ends a connected node's workers and its exchange with the parent.
	stopWork context.CancelFunc
	// activated closes once the parent activated this process.
	activated chan struct{}
	// fenced is set once the parent refuses this process: why, for status and log.
	fenced atomic.Pointer[fenced]
}

func (n *Node) connected() bool { return n.cs.NodeName != "" }

func (n *Node) setSelf(s *hierarchy.Node) {
	n.selfMu.Lock()
	defer n.selfMu.Unlock()
	n.self = s
}

func (n *Node) getSelf() *hierarchy.Node {
	n.selfMu.RLock()
	defer n.selfMu.RUnlock()
	return n.self
}

// start brings up NATS, the stores and the HTTP listener: everything a root and a
// connected node share before their settings are known.
func (n *Node) start(ctx context.Context, ttl time.Duration) error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	var err error
	// Before anything opens the store: one process per data directory.
	if n.lock, err = lockDataDir(n.cfg.DataDir, time.Now()); err != nil {
		return err
	}
	for _, dir := range []string{filepath.Join(n.cfg.DataDir, "registry"), filepath.Join(n.cfg.DataDir, "nats")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	if n.ns, err = events.StartServer(events.ServerConfig{
		Dir: filepath.Join(n.cfg.DataDir, "nats"), Addr: n.cfg.GatewayAddr, Name: n.name, TLS: n.tls,
		Cluster: n.cfg.Cluster,
	}); err != nil {
		return err
	}
	if n.nc, err = n.ns.Connect("outpost-" + n.name); err != nil {
		return err
	}
	n.metrics = prometheus.NewRegistry()
	n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if n.log, err = events.OpenLog(ctx, n.nc, events.LogConfig{MessageTTL: ttl, Registerer: n.metrics,
		RecordFile: filepath.Join(n.cfg.DataDir, "events-log.json"), Placement: n.ns.Placement()}); err != nil {
		return err
	}
	if d := n.log.Damage(); d != nil {
		n.logger.Error("event log damaged: the node stays unready until an operator acts", "lost", d.Count(), "ranges", d.Lost, "err", d)
	}
	buckets := map[string]**events.Bucket{}
	var nodesB, statusB, tokensB *events.Bucket
	buckets[events.BucketNodes], buckets[events.BucketStatus], buckets[events.BucketLocal] = &nodesB, &statusB, &n.local
	buckets[events.BucketTokens], buckets[events.BucketTier] = &tokensB, &n.tier
	var webhooksB *events.Bucket
	buckets[events.BucketWebhooks] = &webhooksB
	for name, b := range buckets {
		if *b, err = events.OpenBucket(ctx, n.nc, name, events.WithPlacement(n.ns.Placement())); err != nil {
			return err
		}
	}
	n.webhooks = hierarchy.NewWebhookStore(webhooksB)
	n.nodes, n.status = hierarchy.NewStore(nodesB), hierarchy.NewStatusStore(statusB)
	n.tokens = hierarchy.NewTokenStore(tokensB)
	if n.view, err = hierarchy.WatchNodes(ctx, n.nodes, n.name); err != nil {
		return err
	}
	n.metrics.MustRegister(childCollector{n}) // linkmetrics.go
	if n.httpLn, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen %s: %w", n.cfg.HTTPAddr, err)
	}
	if n.tls != nil {
		n.httpLn = tls.NewListener(n.httpLn, n.tls)
	}
	// Outermost, so that it counts the connections the server sees (TLS ones too).
	n.conns = newConnLimiter(n.httpLn, n.cfg.HTTP.MaxConnections)
	n.httpLn = n.conns
	// Serve at once: until the node is ready (a connected node waits for its parent)
	// clients get a clear 503, not a connection that hangs.
	starting := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			fmt.Fprintln(w, "ok")
			return
		}
		w.Header().Set("Retry-After", "5")
		http.Error(w, "node "+n.name+" is starting (waiting for its parent to activate it)", http.StatusServiceUnavailable)
	}))
	n.handler.Store(&starting)
	lim := n.cfg.HTTP
	n.httpSrv = &http.Server{ReadHeaderTimeout: lim.HeaderTimeout, IdleTimeout: lim.IdleTimeout, ConnState: n.conns.track,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*n.handler.Load()).ServeHTTP(w, r) })}
	n.served = make(chan error, 1)
	go func() { n.served <- n.httpSrv.Serve(n.httpLn) }()
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return err
	}
	n.internalPw = hex.EncodeToString(pw)
	n.estimator = newContentEstimator(n.ownManifest)
	n.outboxes = newOutboxes(n.nc, events.WithPlacement(n.ns.Placement()))
	close(n.listening)
	return nil
}

func (n *Node) close() {
	n.shutdown()
	if n.parentConn != nil {
		n.parentConn.Close()
	}
	if n.gateway != nil {
		n.gateway.Stop()
	}
	if n.reg != nil {
		_ = n.reg.Close()
	}
	if n.log != nil {
		if err := n.log.Close(); err != nil {
			n.logger.Warn("event log record", "err", err)
		}
	}
	if n.nc != nil {
		_ = n.nc.Drain()
	}
	if n.ns != nil {
		n.ns.Shutdown()
	}
	_ = os.Remove(filepath.Join(n.cfg.DataDir, runningMarker)) // a clean stop: see uncleanStart
	if n.lock != nil {
		_ = n.lock.Close() // releases the lock; the kernel does it too if we die
	}
	n.logger.Info("stopped", "node", n.name)
}

// endpoints is what this node advertises to its children.
func (n *Node) endpoints() hierarchy.Endpoints {
	return hierarchy.Endpoints{
		Registry: advertise(n.httpLn.Addr().String(), n.cfg.AdvertiseHost),
		Gateway:  advertise(n.ns.Addr().String(), n.cfg.AdvertiseHost),
		Protocol: n.protocol(),
	}
}

func (n *Node) protocol() string {
	if n.tls != nil {
		return "https"
	}
	return "http"
}

func advertise(listen, host string) string {
	h, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host != "" {
		h = host
	}
	return net.JoinHostPort(h, port)
}

// openRegistry builds the registry in the given mode, its clients checked by access.
func (n *Node) openRegistry(ctx context.Context, mode registry.Mode, access *hierarchy.Access) error {
	reg, err := registry.New(ctx, registry.Config{Tier: n.tier,
		Dir: filepath.Join(n.cfg.DataDir, "registry"), Mode: mode, Node: n.name,
		Publisher: n.log, Registerer: n.metrics, Logger: n.logger,
		InternalPassword: n.internalPw, Auth: registryAuth{a: access, site: n.connected()},
		TokenKeyFile: filepath.Join(n.cfg.DataDir, "token-key.pem"), Scrub: n.cfg.Scrub.ScrubConfig, MinFreeBytes: n.cfg.MinFreeDisk,
		GC: n.cfg.GC, Storage: n.cfg.Storage,
	})
	n.reg = reg
	return err
}

func (n *Node) startGateway(activator hierarchy.Activator) error {
	var err error
	n.gateway, err = hierarchy.StartGateway(hierarchy.GatewayConfig{
		Self: n.name, Conn: n.nc, Nodes: n.nodes, View: n.view, Tokens: n.tokens, Status: n.status, Activator: activator, Logger: n.logger,
		Disconnect: n.ns.DisconnectChild, Webhooks: n.webhooks,
		// Messages, and the content they will move (statusview.go), from outboxes
		// opened once (outboxes.go).
		Pending: n.childPending,
	})
	if err != nil {
		return err
	}
	n.ns.SetChildAuthenticator(n.gateway)
	return nil
}

// children lists this node's direct children as router neighbours.
func (n *Node) children(ctx context.Context) ([]pipeline.Neighbour, error) {
	// From the watched copy: reading every definition for every routed event would
	// cost each event in proportion to the size of the tree.
	t, err := n.view.Tree(ctx)
	if err != nil {
		return nil, err
	}
	var out []pipeline.Neighbour
	for _, c := range t.Children(n.name) {
		out = append(out, pipeline.Neighbour{Name: c.Name, Outbox: events.DownstreamOutbox(c.Name),
			Matches: c.Settings.Repositories.Matches, TTL: time.Duration(c.Settings.MessageTTL)})
	}
	return out, nil
}

// Neighbours implements pipeline.Topology: the children, and for a ReadWrite
// connected node its parent.
func (n *Node) Neighbours(ctx context.Context) ([]pipeline.Neighbour, error) {
	out, err := n.children(ctx)
	if err != nil {
		return nil, err
	}
	if self := n.getSelf(); self != nil && self.Settings.Mode == hierarchy.ReadWrite {
		out = append(out, pipeline.Neighbour{Name: self.Parent, Outbox: events.UpstreamOutbox(),
			Matches: self.Settings.Repositories.Matches, TTL: time.Duration(self.Settings.MessageTTL)})
	}
	return out, nil
}

// serveHTTP mounts the node's handlers and serves until ctx ends.
func (n *Node) serveHTTP(ctx context.Context, mode registry.Mode) error {
	mux := http.NewServeMux()
	mux.Handle("/v2/", n.refuseWhenFenced(n.reg))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness: only what a restart cures fails it (a store a full disk broke,
		// once space is back), so that a supervisor restarts the node.
		if err := n.ns.NeedsRestart(n.cfg.MinFreeDisk); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := n.ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(n.metrics, promhttp.HandlerOpts{}))
	mux.Handle(registry.TokenPath, n.reg.TokenHandler())
	mux.Handle("/outpost/v1/events", n.operatorOnly(events.Handler(n.log)))
	mux.Handle("/outpost/v1/repositories/", n.refuseWhenFenced(n.reg.RepositoryHandler()))
	mux.Handle("/outpost/v1/sync", n.operatorOnly(http.HandlerFunc(n.serveSyncNow)))
	mux.Handle("/outpost/v1/scrub", n.operatorOnly(http.HandlerFunc(n.serveScrub)))
	mux.Handle("/outpost/v1/events/repair", n.operatorOnly(events.RepairHandler(n.log)))
	mux.Handle("/outpost/v1/status", n.operatorOnly(http.HandlerFunc(n.serveStatus)))
	page, err := n.statusPage()
	if err != nil {
		return err
	}
	mux.Handle("/", page) // statuspage.go: the status page, and 404 for unknown paths
	go n.scrubLoop(ctx, n.cfg.Scrub.Interval)
	mux.Handle("/outpost/v1/gc", n.operatorOnly(n.reg.GCHandler())) // registry/gc.go
	go n.reg.RunGCSchedule(ctx)
	for _, p := range []string{"/outpost/v1/nodes", "/outpost/v1/nodes/", "/outpost/v1/tokens", "/outpost/v1/tokens/"} {
		if n.admin != nil {
			mux.Handle(p, n.admin)
		} else {
			mux.HandleFunc(p, n.serveNotRoot) // notroot.go
		}
	}
	if n.admin != nil {
		n.mountWebhookAPI(mux) // notify.go
	} else {
		mux.HandleFunc("/outpost/v1/webhooks", n.serveNotRoot)
		mux.HandleFunc("/outpost/v1/webhooks/", n.serveNotRoot)
	}
	// Every route but the events stream (a --follow waits for events without
	// writing) must keep moving once its headers are in.
	bounded := progressDeadlines(mux, n.cfg.HTTP.BodyStall)
	h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/outpost/v1/events" {
			mux.ServeHTTP(w, r)
			return
		}
		bounded.ServeHTTP(w, r)
	}))
	n.handler.Store(&h)
	close(n.serving)
	n.logger.Info("serving", "node", n.name, "mode", mode, "http", n.httpLn.Addr().String(),
		"gateway", n.ns.Addr().String(), "data", n.cfg.DataDir, "connected", n.connected(),
		"max_connections", n.cfg.HTTP.MaxConnections, "http_idle_timeout", n.cfg.HTTP.IdleTimeout)
	select {
	case err := <-n.served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	return nil
}

// shutdown stops taking requests and lets those in flight finish.
func (n *Node) shutdown() {
	if n.httpSrv == nil {
		return
	}
	n.logger.Info("shutting down", "node", n.name)
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	if err := n.httpSrv.Shutdown(ctx); err != nil {
		n.logger.Warn("http shutdown", "err", err)
	}
}

func (n *Node) ready(ctx context.Context) error {
	if f := n.fenced.Load(); f != nil {
		// Not a member of the tree any more: traffic belongs to the active process.
		return fmt.Errorf("%s: %s", f.detail.Code, f.detail.Message)
	}
	if err := n.ns.Healthy(); err != nil {
		return err
	}
	if _, err := n.log.Stats(ctx); err != nil {
		return err
	}
	if d := n.log.Damage(); d != nil {
		return d
	}
	return n.reg.Ready(ctx)
}

// runRoot runs the root: the management API, the tree's authority, the gateway for
// its children.
func (n *Node) runRoot(ctx context.Context, mode registry.Mode) error {
	admin, err := hierarchy.SetupAdminToken(ctx, hierarchy.AdminTokenConfig{Tier: n.tier, Local: n.local, Logger: n.logger,
		File: filepath.Join(n.cfg.DataDir, adminTokenFile.file), Token: n.cfg.OperatorToken, Notice: n.cfg.Notices})
	if err != nil {
		return err
	}
	m := hierarchy.NewManager(hierarchy.ManagerConfig{Store: n.nodes, Tokens: n.tokens, Status: n.status, Root: n.name,
		RootMode: mode, Endpoints: n.tierEndpoints(n.endpoints()),
		Pending: n.childPending,
		OnActivation: func(ctx context.Context, node string) {
			if g := n.gateway; g != nil {
				g.FenceTier(ctx, node) // every member: the stale process may be connected to another
			}
		}})
	n.admin = hierarchy.NewAPI(m, admin.Verify, n.cfg.StaleAfter)
	n.isOperator = n.admin.IsAdmin
	if err := n.startGateway(m); err != nil {
		return err
	}
	access := hierarchy.NewAccess(hierarchy.AccessConfig{Self: n.name, Root: true, Nodes: n.nodes, Tokens: n.tokens,
		IsAdmin: n.admin.IsAdmin, RootAnonymousPull: n.cfg.AnonymousPull})
	if n.cfg.Cluster != nil {
		// A member that had no logins of late still has a recent read when another
		// member dies and the sites' logins move to it (hierarchy.Access.KeepFresh).
		go access.KeepFresh(ctx, hierarchy.AccessRefresh)
	}
	if err := n.openRegistry(ctx, mode, access); err != nil {
		return err
	}
	go n.runRouter(ctx)
	go n.runNotify(ctx) // notify.go
	return n.serveHTTP(ctx, mode)
}

func (n *Node) runRouter(ctx context.Context) {
	r := pipeline.NewRouter(n.nc, n.log, n, n.logger)
	r.SetLedger(n.ledger)
	if err := r.Run(ctx); err != nil && ctx.Err() == nil {
		n.logger.Error("router stopped", "err", err)
	}
}
