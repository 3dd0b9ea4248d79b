// Package registry is a node's OCI registry: the distribution/v3 app, embedded, with
// what Outpost adds in front of it (authentication and the token endpoint, read-only
// mode, the OCI 1.1 referrers API and OCI-Subject, sha512 manifests, stricter input
// checks, metrics) and behind it (every manifest and tag change becomes an event
// before the client hears of success).
package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the default storage
	"github.com/opencontainers/image-spec/specs-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/events"

	_ "crypto/sha512" // sha512 digests must be computable for go-digest to accept them
)

// Mode says whether a node accepts pushes (events.Mode, shared with the tree).
type Mode = events.Mode

// The two modes of a node.
const (
	ReadWrite = events.ReadWrite
	ReadOnly  = events.ReadOnly
)

// Config configures a node's registry.
type Config struct {
	// Dir is the filesystem storage root. Required with filesystem storage.
	Dir string
	// Storage says where content is stored; default the filesystem under Dir.
	Storage StorageConfig
	// Mode is ReadWrite or ReadOnly. Default ReadWrite.
	Mode Mode
	// Node names this node as the origin of its events. Required.
	Node string
	// Publisher records events. Required.
	Publisher Publisher
	// Registerer receives request metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger logs what the registry does itself; default slog.Default().
	Logger *slog.Logger
	// Now is the clock for health records; default time.Now.
	Now func() time.Time
	// InternalPassword lets the node's own replication workers write, also on a
	// ReadOnly node. Empty: no internal writes.
	InternalPassword string
	// Auth checks client credentials: client tokens, children's sync tokens, the
	// admin. Nil leaves the registry open to anyone (library use only).
	Auth Authenticator
	// TokenKeyFile holds the key registry tokens are signed with; made on first
	// start. Empty: a new key per process. Unused when TokenKeys is set.
	TokenKeyFile string
	// TokenKeys, when set, sign and verify registry tokens instead: a root tier's
	// shared key set (NewKeySet).
	TokenKeys TokenKeys
	// UploadSecret signs the state of blob uploads (distribution's http.secret):
	// members that share storage must share it, or an upload started at one is
	// refused at another (TierUploadSecret). Empty: a new secret per process.
	UploadSecret string
	// Tier, the OUTPOST_TIER bucket, sets both from the state the members of a root
	// tier share (tier.go): a key set with this member's key in TokenKeyFile, and
	// the tier's upload secret. Optional.
	Tier *events.Bucket
	// Scrub bounds the I/O of a scrub (scrub.go).
	Scrub ScrubConfig
	// GC sets garbage collection's grace and schedule (gc.go).
	GC GCConfig
	// MinFreeBytes is the disk space writes leave free (diskfull.go); default
	// DefaultMinFreeBytes.
	MinFreeBytes uint64
	// RepositoryDeleteWait bounds how long a repository delete waits for the writes
	// to the repository under way at this node (repolock.go); default
	// DefaultRepositoryDeleteWait.
	RepositoryDeleteWait time.Duration
}

// Validate names the first field that is missing or wrong.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "" && c.Storage.Driver != StorageS3:
		return errors.New("registry: storage directory is empty")
	case c.Node == "":
		return errors.New("registry: node name is empty")
	case c.Publisher == nil:
		return errors.New("registry: no event publisher")
	case c.RepositoryDeleteWait < 0:
		return fmt.Errorf("registry: repository delete wait %s is negative", c.RepositoryDeleteWait)
	}
	if err := c.Scrub.Validate(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if err := c.GC.Validate(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if err := c.Storage.Validate(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	_, err := events.ParseMode(string(c.Mode))
	return err
}

// Registry serves the OCI distribution API under /v2/.
type Registry struct {
	cfg       Config
	app       *handlers.App
	dist      http.Handler // app, reading its parameters from the query only (api.go)
	driver    storagedriver.StorageDriver
	namespace distribution.Namespace
	referrers *referrersIndex
	health    *health
	metrics   *requestMetrics
	handler   http.Handler
	tokens    *tokenIssuer
	limiter   *events.LoginLimiter
	incoming  claims // blobs being written in process (local.go)
	scrub     *scrubber
	gc        *gcState
	disk      *diskSpace
	repos     repoLocks // a repository delete against the writes to it (repolock.go)
}

var specsVersioned = specs.Versioned{SchemaVersion: 2}

// maxManifestSize is distribution's own limit, enforced here first so that the
// client gets a clear 413 rather than a parse error.
const maxManifestSize = 4 << 20

// catalogMaxEntries is the most repositories one catalog page lists.
const catalogMaxEntries = 1000

// New builds the registry. It returns an error, never panics, on bad configuration.
func New(ctx context.Context, cfg Config) (reg *Registry, err error) {
	if cfg.Mode == "" {
		cfg.Mode = ReadWrite
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinFreeBytes == 0 {
		cfg.MinFreeBytes = DefaultMinFreeBytes
	}
	if cfg.RepositoryDeleteWait == 0 {
		cfg.RepositoryDeleteWait = DefaultRepositoryDeleteWait
	}
	if cfg.Storage.CheckTimeout == 0 {
		cfg.Storage.CheckTimeout = DefaultStorageCheckTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := registerMiddleware(); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	driverName, params := cfg.driverParameters()
	driver, err := factory.Create(ctx, driverName, params)
	if err != nil {
		return nil, fmt.Errorf("registry: storage %s: %w", cfg.storageName(), err)
	}
	if err := checkStorage(ctx, driver, cfg.Storage.CheckTimeout); err != nil {
		return nil, fmt.Errorf("registry: storage %s: %w", cfg.storageName(), err)
	}
	if cfg.Storage.Driver == StorageS3 {
		cfg.Logger.Info("content is stored in S3", "where", cfg.storageName(), "redirect", cfg.Storage.S3.Redirect)
	}
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		return nil, fmt.Errorf("registry: storage %s: %w", cfg.storageName(), err)
	}
	r := &Registry{cfg: cfg, driver: driver, namespace: ns, health: newHealth(cfg.Now), limiter: events.NewLoginLimiter()}
	r.disk = newDiskSpace(&cfg, r.health)
	if err := r.dropStaleIncoming(ctx); err != nil {
		cfg.Logger.Warn("stale partial blobs not removed", "err", err)
	}
	sm, err := newScrubMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("registry: metrics: %w", err)
	}
	r.scrub = &scrubber{running: make(chan struct{}, 1), metrics: sm}
	gm, err := newGCMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("registry: metrics: %w", err)
	}
	r.gc = &gcState{cfg: cfg.GC.withDefaults(cfg.Now), metrics: gm}
	if err := r.loadQuarantine(ctx); err != nil {
		return nil, fmt.Errorf("registry: quarantined blobs: %w", err)
	}
	for _, c := range r.Quarantined() {
		cfg.Logger.Error("a blob found corrupt earlier is still not stored good: it is not served", "digest", c.Digest)
	}
	if cfg.Tier != nil && cfg.TokenKeys == nil {
		if cfg.TokenKeys, cfg.UploadSecret, err = tierState(ctx, cfg); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	}
	keys := cfg.TokenKeys
	if keys == nil {
		var key *ecdsa.PrivateKey
		if cfg.TokenKeyFile != "" {
			key, err = loadSigningKey(cfg.TokenKeyFile)
		} else {
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		}
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		keys = singleKey{newSigningKey(key)}
	}
	r.tokens = newTokenIssuer(keys, cfg.Node, cfg.Now)
	r.referrers = &referrersIndex{driver: driver, namespace: ns}
	h := &hook{node: cfg.Node, publisher: cfg.Publisher, referrers: r.referrers, health: r.health}

	secret := []byte(cfg.UploadSecret)
	if len(secret) == 0 {
		if secret, err = newUploadSecret(); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	}
	dcfg := &configuration.Configuration{
		Storage: configuration.Storage{
			driverName: configuration.Parameters(params),
			"delete":   configuration.Parameters{"enabled": true},
			// Blob reads answer with the bytes unless presigned redirects were asked
			// for (S3 only; the filesystem driver has none).
			"redirect": configuration.Parameters{"disable": !cfg.Storage.S3.Redirect},
		},
		Middleware: map[string][]configuration.Middleware{
			"repository": {{Name: middlewareName, Options: configuration.Parameters{hookOption: h}}},
		},
	}
	dcfg.HTTP.Secret = string(secret)
	// Defaults configuration.Parse would fill in.
	dcfg.Catalog.MaxEntries = catalogMaxEntries
	// Non-distributable layers name where they live; any http(s) URL is allowed, as
	// the OCI spec expects. Without this distribution rejects them all.
	dcfg.Validation.Manifests.URLs.Allow = []string{`^https?://`}

	defer func() {
		if p := recover(); p != nil {
			reg, err = nil, fmt.Errorf("registry: distribution app: %v", p)
		}
	}()
	r.app = handlers.NewApp(ctx, dcfg)
	r.dist = queryOnlyForm(r.app)
	if cfg.Registerer != nil {
		if r.metrics, err = newRequestMetrics(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("registry: metrics: %w", err)
		}
	}
	r.handler = instrument(r.disk.guard(http.HandlerFunc(r.serve)), r.metrics, cfg.Logger)
	return r, nil
}

// ServeHTTP serves the OCI distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.handler.ServeHTTP(w, req) }

// checkStorage makes sure the storage answers within timeout: at start (a missing
// bucket or refused credentials are said then, not at the first push) and for
// readiness.
func checkStorage(ctx context.Context, driver storagedriver.StorageDriver, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := driver.Stat(ctx, "/"); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %s: %w", timeout, err)
		}
		return err
	}
	return nil
}

// Ready says whether storage answers and the last event publish succeeded.
func (r *Registry) Ready(ctx context.Context) error {
	if err := checkStorage(ctx, r.driver, r.cfg.Storage.CheckTimeout); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	r.disk.ready()
	return r.health.err()
}

// Close stops the app's background work.
func (r *Registry) Close() error { return r.app.Shutdown() }
