// Package node is an Outpost node as a library: an OCI registry with its embedded
// NATS JetStream event log, run as the root of a tree or connected under a parent.
// `outpost serve` only maps flags, environment and its config file onto a Config;
// tests start nodes in process with New and Run, as many as they like (node/nodetest).
// A node keeps no process-wide state of its own and reads no environment; the one
// process-wide thing it uses is logrus, which the embedded distribution app logs
// through: the program sets it up (cmd/outpost does, in the log format of its slog).
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/pipeline"
	"github.com/outpost-edge/outpost/registry"
	"github.com/outpost-edge/outpost/statuspage"
)

// Config is everything a node needs. DefaultConfig is a root named "root" on
// 127.0.0.1:5000 (gateway 127.0.0.1:4222) with its data in ./data.
type Config struct {
	// Name is a root's name, the origin of its events: "root", or 5 to 50 letters
	// and digits starting with a letter. A connected node's name comes from its
	// connection string.
	Name string
	// Mode is a root's mode; a connected node's comes from its parent.
	Mode registry.Mode
	// MessageTTL is how long a root keeps its events (P1D to P90D); a connected
	// node's comes from its parent.
	MessageTTL time.Duration
	// DataDir holds the registry storage, the NATS store and the node's own files
	// (lock, tokens, instance id). One process per directory.
	DataDir string
	// HTTPAddr serves the OCI API and the node's own; GatewayAddr is NATS for the
	// node's children. Port 0 takes a free port (see HTTPAddr and GatewayAddr).
	HTTPAddr, GatewayAddr string
	// AdvertiseHost is the host this node's children reach it at; empty: the
	// listen addresses' host.
	AdvertiseHost string

	// ConnectionString makes this a connected node: the line `outpost node
	// get-settings` printed at the root. It holds the sync password.
	ConnectionString string
	// ParentRegistry and ParentGateway override the connection string's parent
	// endpoints (a site that reaches its parent through another address).
	ParentRegistry, ParentGateway string

	// TLSCertFile and TLSKeyFile (PEM) make the HTTP listener and the gateway
	// serve TLS. ParentCAFile is the CA that signed the parent's certificate.
	TLSCertFile, TLSKeyFile string
	ParentCAFile            string

	// OperatorToken is the node's operator token at its first start: the admin
	// token at a root (OUTPOST_ADMIN_TOKEN), the local operator token elsewhere
	// (OUTPOST_OPERATOR_TOKEN). Empty: DATA/admin-token or DATA/operator-token, or
	// one generated and written there. Later starts check it against the first.
	OperatorToken string
	// AnonymousPull lets clients without credentials pull at a root.
	AnonymousPull bool
	// HTTP bounds the HTTP connections (conns.go).
	HTTP HTTPLimits
	// MinFreeDisk is the disk space (bytes) registry writes leave free for the
	// event log: under it pushes get 507 and /readyz says the disk is full.
	MinFreeDisk uint64
	// Scrub schedules and bounds the scrub of stored blobs.
	Scrub ScrubConfig
	// Storage says where content is stored: the filesystem under DataDir (the
	// default) or S3.
	Storage registry.StorageConfig
	// GC schedules garbage collection (registry/gc.go); its clock defaults to Now.
	GC registry.GCConfig
	// Version is the build this node reports in its status and on its page
	// (cmd/outpost: what `outpost version` prints); empty: read from the
	// binary's build info.
	Version string
	// StatusPage sets the status page's sessions (TTL, clock, refresh); its
	// source, token check and TLS flag are the node's.
	StatusPage statuspage.Config
	// ConflictWindow is how long after a write here the parent's order replacing
	// it counts as overwriting it, a tag conflict (pipeline.Ledger).
	ConflictWindow time.Duration
	// Storage and cluster settings belong here too, each a field of its own
	// package's config type (the registry's storage, the event log's cluster),
	// checked in Validate through that type's own Validate.
	//
	// Cluster makes a root a member of a root tier: its NATS server joins the
	// other members' JetStream cluster. Nil: a single root, and every site.
	Cluster *events.ClusterConfig
	// TierRegistry and TierGateway, at a root member, are what the connection
	// strings of the root's children name (every member's endpoints or a load
	// balancer's, comma-separated host:port); empty: this member's own.
	TierRegistry, TierGateway string

	// StatusInterval is how often a connected node exchanges settings and status
	// with its parent; a node silent for StaleAfter shows Offline at the root.
	StatusInterval, StaleAfter time.Duration
	// ActivateTimeout bounds one attempt of a connected node to be activated by
	// its parent. A new node waits ActivateRetry after a failed attempt, doubling
	// up to ActivateRetryMax; a node on kept settings tries every RetryAfter, which
	// also spaces out reconciles that failed.
	ActivateTimeout, ActivateRetry, ActivateRetryMax, RetryAfter time.Duration
	// ShutdownTimeout bounds how long requests in flight may take to finish once
	// the node stops.
	ShutdownTimeout time.Duration
	// Now is the clock sync windows are read by.
	Now func() time.Time

	// Logger receives the node's log; nil: slog.Default(). LogLevel is the level
	// a parent may change (node update --log-level); nil: the parent's is ignored.
	Logger   *slog.Logger
	LogLevel *slog.LevelVar
	// Notices receives what an operator must read once, outside the log (where a
	// generated admin token was written); nil: os.Stderr.
	Notices io.Writer
}

// DefaultConfig is a root named "root" on 127.0.0.1:5000, data in ./data.
func DefaultConfig() Config {
	return Config{
		Name: RootName, Mode: registry.ReadWrite, MessageTTL: events.DefaultMessageTTL,
		DataDir: "./data", HTTPAddr: "127.0.0.1:5000", GatewayAddr: "127.0.0.1:4222",
		HTTP: DefaultHTTPLimits(), MinFreeDisk: registry.DefaultMinFreeBytes,
		Scrub:          ScrubConfig{Interval: 24 * time.Hour, ScrubConfig: registry.ScrubConfig{Concurrency: 2}},
		ConflictWindow: pipeline.DefaultLedgerConfig().ConflictWindow,
		StatusPage:     statuspage.DefaultConfig(),
		StatusInterval: 2 * time.Second, StaleAfter: 15 * time.Second, ShutdownTimeout: 30 * time.Second,
		ActivateTimeout: 10 * time.Second, ActivateRetry: time.Second, ActivateRetryMax: 30 * time.Second, RetryAfter: 5 * time.Second,
		Now: time.Now,
	}
}

// Validate checks the config, naming what is wrong, and fills what derives from
// the machine (the connection bound from the file descriptor limit).
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data directory: none given")
	}
	if c.ConnectionString != "" {
		if _, err := hierarchy.ParseConnectionString(c.ConnectionString); err != nil {
			return err
		}
	} else {
		if _, err := events.ParseMode(string(c.Mode)); err != nil {
			return err
		}
		logCfg := events.LogConfig{MessageTTL: c.MessageTTL}
		if err := logCfg.Validate(); err != nil {
			return err
		}
		if c.Name != RootName {
			if err := hierarchy.ValidateName(c.Name); err != nil {
				return fmt.Errorf("%w (or %q)", err, RootName)
			}
		}
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if c.MinFreeDisk == 0 {
		return errors.New("min-free-disk: want a number of bytes above 0")
	}
	if c.Scrub.Interval < 0 {
		return fmt.Errorf("scrub-interval %s: want a duration such as 24h, or 0 for none", c.Scrub.Interval)
	}
	if err := c.Scrub.ScrubConfig.Validate(); err != nil {
		return err
	}
	if err := c.GC.Validate(); err != nil {
		return err
	}
	if err := c.Storage.Validate(); err != nil {
		return err
	}
	if c.ConflictWindow <= 0 {
		return fmt.Errorf("conflict-window %s: want a duration above 0 such as 1m", c.ConflictWindow)
	}
	if c.StatusInterval <= 0 || c.StaleAfter <= c.StatusInterval {
		return fmt.Errorf("timings: status interval %s, stale after %s: both positive, stale after longer than the interval", c.StatusInterval, c.StaleAfter)
	}
	for _, t := range []struct {
		what string
		d    time.Duration
	}{{"activate timeout", c.ActivateTimeout}, {"activate retry", c.ActivateRetry}, {"retry after", c.RetryAfter}, {"shutdown timeout", c.ShutdownTimeout}} {
		if t.d <= 0 {
			return fmt.Errorf("timings: %s %s: must be positive", t.what, t.d)
		}
	}
	if c.ActivateRetryMax < c.ActivateRetry {
		return fmt.Errorf("timings: activate retry max %s: less than activate retry %s", c.ActivateRetryMax, c.ActivateRetry)
	}
	return nil
}

// RootName is a root's default name, the one name outside the naming rule
// (hierarchy.ValidateName) a root may have.
const RootName = "root"

// New checks cfg and builds a node; nothing is written or listened on until Run.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := serverTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogLevel == nil {
		cfg.LogLevel = new(slog.LevelVar)
	}
	if cfg.Notices == nil {
		cfg.Notices = os.Stderr
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GC.Now == nil {
		cfg.GC.Now = cfg.Now
	}
	n := &Node{cfg: cfg, logger: cfg.Logger, level: cfg.LogLevel, name: cfg.Name, now: cfg.Now, tls: tlsCfg,
		operatorFailed: events.NewLoginLimiter(),
		runState:       runState{listening: make(chan struct{}), serving: make(chan struct{}), done: make(chan struct{})}}
	n.selfRT = n.selfTransport()
	if cfg.ConnectionString != "" {
		// A connected node's name, mode and settings come from its parent.
		if n.cs, err = hierarchy.ParseConnectionString(cfg.ConnectionString); err != nil {
			return nil, err
		}
		n.name = n.cs.NodeName
		if cfg.ParentRegistry != "" {
			n.cs.ParentRegistry = cfg.ParentRegistry
		}
		if cfg.ParentGateway != "" {
			n.cs.ParentGateway = cfg.ParentGateway
		}
		if err := n.cs.Validate(); err != nil {
			return nil, fmt.Errorf("parent registry/gateway: %w", err)
		}
	}
	if cfg.Cluster != nil && cfg.Cluster.Logger == nil {
		c := *cfg.Cluster // the caller's stays as it was
		c.Logger = cfg.Logger
		n.cfg.Cluster = &c
	}
	return n, nil
}

// ErrRunning is Run's answer on a Node that ran already: a Node runs once; to
// start one again on the same data directory, build another with New.
var ErrRunning = errors.New("node: Run called twice: a Node runs once, build another with New")

// Run runs the node until ctx ends or Shutdown is called, then stops it in order:
// stop taking requests and finish those in flight, then close the event log and
// NATS. It returns why the node stopped early, or nil.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.runMu.Lock()
	if n.cancel != nil {
		n.runMu.Unlock()
		return ErrRunning
	}
	n.cancel = cancel
	n.runMu.Unlock()
	defer close(n.done)
	defer n.close()
	err := n.run(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Stopped while starting (a SIGTERM from a supervisor during start-up): a
		// stop as asked, not a failure.
		n.logger.Info("stopped while starting", "node", n.name, "at", err.Error())
		return nil
	}
	return err
}

func (n *Node) run(ctx context.Context) error {
	if n.connected() {
		if err := n.start(ctx, events.DefaultMessageTTL); err != nil {
			return err
		}
		return n.runConnected(ctx)
	}
	if err := n.start(ctx, n.cfg.MessageTTL); err != nil {
		return err
	}
	return n.runRoot(ctx, n.cfg.Mode)
}

// Shutdown stops a running node and waits until Run returned, or ctx ends.
func (n *Node) Shutdown(ctx context.Context) error {
	n.runMu.Lock()
	cancel := n.cancel
	n.runMu.Unlock()
	if cancel == nil {
		return nil // never ran
	}
	cancel()
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("node %s: shutdown: %w", n.name, ctx.Err())
	}
}

// Name is the node's name (a connected node's, from its connection string).
func (n *Node) Name() string { return n.name }

// Listening is closed once the HTTP listener and the gateway are bound.
func (n *Node) Listening() <-chan struct{} { return n.listening }

// Serving is closed once the node serves its API (a connected node: once its
// parent activated it, or it started on kept settings).
func (n *Node) Serving() <-chan struct{} { return n.serving }

// Done is closed once Run returned.
func (n *Node) Done() <-chan struct{} { return n.done }

// HTTPAddr is the address the HTTP listener is bound to; "" before Listening.
func (n *Node) HTTPAddr() string {
	select {
	case <-n.listening:
		return n.httpLn.Addr().String()
	default:
		return ""
	}
}

// GatewayAddr is the address the gateway (NATS) is bound to; "" before Listening.
func (n *Node) GatewayAddr() string {
	select {
	case <-n.listening:
		return n.ns.Addr().String()
	default:
		return ""
	}
}

// runState is what Run and Shutdown share.
type runState struct {
	runMu     sync.Mutex
	cancel    context.CancelFunc
	listening chan struct{}
	serving   chan struct{}
	done      chan struct{}
}
