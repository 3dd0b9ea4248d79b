package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/node"
)

// serveOptions are the settings of `outpost serve`; the YAML keys are the flag names.
type serveOptions struct {
	Data        string `yaml:"data"`
	Addr        string `yaml:"addr"`
	GatewayAddr string `yaml:"gateway-addr"`
	Mode        string `yaml:"mode"`
	Name        string `yaml:"name"`
	MessageTTL  string `yaml:"message-ttl"`
	LogLevel    string `yaml:"log-level"`
	LogFormat   string `yaml:"log-format"`
	// ConnectionString makes this a connected node (from `outpost node get-settings`).
	// It holds the sync password, so it comes from a file, the environment or the
	// config file, never from the command line (every process listing shows that).
	ConnectionString     string `yaml:"connection-string"`
	ConnectionStringFile string `yaml:"connection-string-file"`
	// AdvertiseAddr is the host this node's children reach it at.
	AdvertiseAddr string `yaml:"advertise-addr"`
	// ParentRegistry and ParentGateway override the parent endpoints of the
	// connection string (a site that reaches its parent through another address).
	ParentRegistry string `yaml:"parent-registry"`
	ParentGateway  string `yaml:"parent-gateway"`
	// ClockOffsetFile, for tests only, shifts the clock sync windows are read by: the
	// file holds a Go duration ("26h"). Windows are validated as always.
	ClockOffsetFile string `yaml:"-"`
	// AnonymousPull lets clients without credentials pull at the root (other nodes
	// get the setting from the root: node update --anonymous-pull).
	AnonymousPull string `yaml:"anonymous-pull"`
	// TLSCert and TLSKey make the HTTP listener and the gateway serve TLS.
	TLSCert string `yaml:"tls-cert"`
	TLSKey  string `yaml:"tls-key"`
	// ParentCA is a PEM file of the CA that signed the parent's certificate.
	ParentCA string `yaml:"parent-ca"`
	// ScrubInterval, ScrubRate and ScrubConcurrency schedule and bound the scrub
	// of stored blobs (scrub.go).
	ScrubInterval    string `yaml:"scrub-interval"`
	ScrubRate        string `yaml:"scrub-rate"`
	ScrubConcurrency string `yaml:"scrub-concurrency"`
	// MaxConnections and HTTPIdleTimeout bound the HTTP connections (conns.go).
	MaxConnections  string `yaml:"max-connections"`
	HTTPIdleTimeout string `yaml:"http-idle-timeout"`
	// MinFreeDisk is the disk space (bytes) registry writes leave free for the
	// event log: under it, pushes get 507 and /readyz says the disk is full.
	MinFreeDisk string `yaml:"min-free-disk"`
	// GCSchedule is a 5-field cron schedule for garbage collection (gc.go); empty
	// is none.
	GCSchedule string `yaml:"gc-schedule"`
	// ConflictWindow is how long after a write here the parent's order replacing it
	// counts as overwriting it (a tag conflict) rather than an ordinary update.
	ConflictWindow string `yaml:"conflict-window"`
	// Storage says where content is stored (storage.go).
	Storage storageOptions `yaml:",inline"`
	// clusterOptions make a root a member of a root tier (cluster.go).
	clusterOptions `yaml:",inline"`
}

// defaultServeOptions are node.DefaultConfig as flags show them.
func defaultServeOptions() serveOptions {
	d := node.DefaultConfig()
	return serveOptions{
		Data: d.DataDir, Addr: d.HTTPAddr, GatewayAddr: d.GatewayAddr,
		Mode: string(d.Mode), Name: d.Name, MessageTTL: events.FormatDuration(d.MessageTTL),
		LogLevel: "info", LogFormat: "text", AnonymousPull: strconv.FormatBool(d.AnonymousPull),
		ScrubInterval: strings.TrimSuffix(d.Scrub.Interval.String(), "0m0s"), ScrubRate: strconv.FormatInt(d.Scrub.BytesPerSecond, 10),
		ScrubConcurrency: strconv.Itoa(d.Scrub.Concurrency),
		MaxConnections:   strconv.Itoa(d.HTTP.MaxConnections), HTTPIdleTimeout: d.HTTP.IdleTimeout.String(),
		MinFreeDisk: strconv.FormatUint(d.MinFreeDisk, 10), ConflictWindow: d.ConflictWindow.String(),
		Storage:        defaultStorageOptions(),
		clusterOptions: clusterOptions{ClusterListen: events.DefaultClusterListen, ClusterReplicas: "0"},
	}
}

func newServeCmd() *cobra.Command {
	var configFile, pprofAddr string
	flagOpts := defaultServeOptions()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: an OCI registry with its embedded NATS JetStream event log",
		Long: `Run a node: an OCI registry with its embedded NATS JetStream event log.

Every flag can also come from an environment variable, OUTPOST_ and the flag's name in
upper case with dashes as underscores (--gateway-addr: OUTPOST_GATEWAY_ADDR), and from
the --config file (OUTPOST_CONFIG). A flag wins over its variable, the variable over the
file, the file over the default. Secrets have variables and no flag:
OUTPOST_CONNECTION_STRING (or --connection-string-file), OUTPOST_ADMIN_TOKEN (a root's
first start), OUTPOST_OPERATOR_TOKEN (a site's first start).`,
		Example: `  outpost serve                                  # root node on 127.0.0.1:5000, data in ./data
  outpost serve --data /var/lib/outpost --mode ReadOnly
  outpost serve --config /etc/outpost/outpost.yaml --log-level debug   # flags win over the file
  outpost node get-settings factory1 > factory1.cs                     # at the root, then at the site:
  outpost serve --data /var/lib/outpost --connection-string-file factory1.cs
  OUTPOST_DATA=/var/lib/outpost OUTPOST_LOG_FORMAT=json outpost serve   # every flag has its OUTPOST_* variable`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := defaultServeOptions()
			if f := cmd.Flags().Lookup("connection-string"); f.Changed {
				return usage(connectionStringOnCommandLine(f.Value.String()), "")
			}
			if f := cmd.Flags().Lookup("connection-string-file"); f.Changed && strings.TrimSpace(f.Value.String()) == "" {
				// An unset variable in --connection-string-file "$FILE" must not start a root.
				return withHint(errors.New(`--connection-string-file "": no file named`), "outpost serve --connection-string-file PATH (the file `outpost node get-settings NAME` was written to)")
			}
			if !cmd.Flags().Changed("config") {
				configFile = os.Getenv(envName("config"))
			}
			if configFile != "" {
				if err := loadServeConfig(configFile, &opts); err != nil {
					return usage(err, "")
				}
			}
			if err := overrideFromEnv(&opts); err != nil { // serveenv.go
				return err
			}
			cmd.Flags().Visit(func(f *pflag.Flag) { overrideFromFlag(&opts, &flagOpts, f.Name) })
			cs, err := connectionString(opts)
			if err != nil {
				return err
			}
			opts.ConnectionString = cs
			if pprofAddr != "" {
				if err := startPprof(cmd.Context(), pprofAddr); err != nil {
					return err
				}
			}
			return runNode(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file with any of the flags below as keys; flags and their OUTPOST_* variables win over it")
	f.StringVar(&flagOpts.Data, "data", flagOpts.Data, "data directory: registry storage and the NATS store")
	f.StringVar(&flagOpts.Addr, "addr", flagOpts.Addr, "HTTP listen address: OCI API, /metrics, /healthz, /readyz")
	f.StringVar(&flagOpts.GatewayAddr, "gateway-addr", flagOpts.GatewayAddr, "NATS listen address for this node's children")
	f.StringVar(&flagOpts.Mode, "mode", flagOpts.Mode, "ReadWrite or ReadOnly (root and standalone nodes)")
	f.StringVar(&flagOpts.Name, "name", flagOpts.Name, "this node's name, the origin of its events")
	f.StringVar(&flagOpts.MessageTTL, "message-ttl", flagOpts.MessageTTL, "how long events stay in the log, ISO 8601, P1D to P90D")
	f.StringVar(&flagOpts.LogLevel, "log-level", flagOpts.LogLevel, "debug, info, warn or error")
	f.StringVar(&flagOpts.LogFormat, "log-format", flagOpts.LogFormat, "text or json")
	f.StringVar(&flagOpts.ConnectionStringFile, "connection-string-file", "",
		"run as a connected node under a parent: a file (mode 0600) holding the line 'outpost node get-settings' printed (or env "+envConnectionString+"); mode and settings then come from the root")
	var refused string
	f.StringVar(&refused, "connection-string", "", "refused: the sync password would be in every process listing; use --connection-string-file or env "+envConnectionString)
	_ = f.MarkHidden("connection-string")
	f.StringVar(&flagOpts.AdvertiseAddr, "advertise-addr", "", "host this node's children reach it at (default: the listen addresses' host)")
	f.StringVar(&flagOpts.ParentRegistry, "parent-registry", "", "reach the parent's registry at this host:port (or several, comma-separated) instead of the connection string's")
	f.StringVar(&flagOpts.ParentGateway, "parent-gateway", "", "reach the parent's gateway at this host:port (or several, comma-separated) instead of the connection string's")
	f.StringVar(&flagOpts.AnonymousPull, "anonymous-pull", flagOpts.AnonymousPull, "root only: let clients without credentials pull (true or false)")
	f.Lookup("anonymous-pull").NoOptDefVal = "true"
	f.StringVar(&flagOpts.TLSCert, "tls-cert", "", "PEM certificate (chain) for HTTPS and the gateway's TLS")
	f.StringVar(&flagOpts.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&flagOpts.ParentCA, "parent-ca", "", "PEM CA certificate that signed the parent's (with ParentEndpointProtocol=https)")
	f.StringVar(&flagOpts.ScrubInterval, "scrub-interval", flagOpts.ScrubInterval, "how often every stored blob is checked against its digest (0: never; `outpost scrub` any time)")
	f.StringVar(&flagOpts.ScrubRate, "scrub-rate", flagOpts.ScrubRate, "bytes per second a scrub may read (0: no cap)")
	f.StringVar(&flagOpts.ScrubConcurrency, "scrub-concurrency", flagOpts.ScrubConcurrency, "blobs a scrub hashes at once")
	f.StringVar(&flagOpts.MaxConnections, "max-connections", flagOpts.MaxConnections,
		"most HTTP connections held open; past it a new one replaces the longest idle (0: half the file descriptor limit, at most 8192)")
	f.StringVar(&flagOpts.HTTPIdleTimeout, "http-idle-timeout", flagOpts.HTTPIdleTimeout, "close a keep-alive HTTP connection idle this long (Go duration)")
	f.StringVar(&flagOpts.MinFreeDisk, "min-free-disk", flagOpts.MinFreeDisk,
		"bytes of disk that pushes leave free for the event log; under it pushes get 507 and /readyz says the disk is full")
	f.StringVar(&flagOpts.GCSchedule, "gc-schedule", flagOpts.GCSchedule,
		"`cron` schedule (5 fields, such as \"0 3 * * *\") for removing the blobs no manifest references; empty: only when outpost gc asks")
	f.StringVar(&flagOpts.ConflictWindow, "conflict-window", flagOpts.ConflictWindow,
		"how long after a write here the parent's order replacing it counts as a tag conflict (logged, counted, in status) rather than an update")
	flagOpts.Storage.addFlags(f)
	f.StringVar(&flagOpts.ClockOffsetFile, "clock-offset-file", "", "tests only: shift the sync-window clock by the duration in this file")
	_ = f.MarkHidden("clock-offset-file")
	f.StringVar(&pprofAddr, "pprof-addr", "", "benchmarks and debugging: serve net/http/pprof on this loopback address")
	_ = f.MarkHidden("pprof-addr")
	addClusterFlags(f, &flagOpts.clusterOptions)
	documentEnv(f) // serveenv.go
	return cmd
}

func loadServeConfig(path string, opts *serveOptions) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(opts); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// fields maps each flag name to its setting, so that a flag given on the command
// line can win over the config file.
func (o *serveOptions) fields() map[string]*string {
	m := map[string]*string{
		"data": &o.Data, "addr": &o.Addr, "gateway-addr": &o.GatewayAddr, "mode": &o.Mode,
		"name": &o.Name, "message-ttl": &o.MessageTTL, "log-level": &o.LogLevel,
		"log-format": &o.LogFormat, "connection-string-file": &o.ConnectionStringFile,
		"advertise-addr": &o.AdvertiseAddr, "clock-offset-file": &o.ClockOffsetFile,
		"parent-registry": &o.ParentRegistry, "parent-gateway": &o.ParentGateway,
		"anonymous-pull": &o.AnonymousPull, "tls-cert": &o.TLSCert, "tls-key": &o.TLSKey,
		"parent-ca": &o.ParentCA, "scrub-interval": &o.ScrubInterval, "scrub-rate": &o.ScrubRate,
		"scrub-concurrency": &o.ScrubConcurrency,
		"max-connections":   &o.MaxConnections, "http-idle-timeout": &o.HTTPIdleTimeout,
		"min-free-disk": &o.MinFreeDisk, "conflict-window": &o.ConflictWindow, "gc-schedule": &o.GCSchedule,
	}
	maps.Copy(m, o.Storage.fields())
	maps.Copy(m, o.clusterOptions.fields())
	return m
}

// The environment serve reads: a connected node's connection string, and the
// operator token a node is set up with at its first start (the admin token at the
// root). Secrets come from files or the environment, never from the command line.
const (
	envConnectionString = "OUTPOST_CONNECTION_STRING"
	envAdminToken       = "OUTPOST_ADMIN_TOKEN"
	envOperatorToken    = "OUTPOST_OPERATOR_TOKEN"
)

// connectionStringOnCommandLine refuses --connection-string: any user of the
// machine reads a process's arguments (ps, /proc/PID/cmdline), and the connection
// string holds the node's sync password. An empty value is refused too: it would
// otherwise start a root where a site was meant.
func connectionStringOnCommandLine(v string) error {
	hint := "outpost node get-settings NAME > NAME.cs (at the root), then outpost serve --connection-string-file NAME.cs, or export " + envConnectionString + "=\"$(cat NAME.cs)\""
	if strings.TrimSpace(v) == "" {
		return withHint(errors.New(`--connection-string "": empty, and refused anyway: a connection string holds the sync password, which the command line shows to every user of the machine`), hint)
	}
	return withHint(errors.New("--connection-string: refused, as it puts the node's sync password in every process listing"), hint)
}

// connectionString reads a connected node's connection string from the one place
// it was given: --connection-string-file (or the config file's
// connection-string-file), the config file's connection-string, or the
// environment. None is a root; a source that is given but empty is an error, never
// a root.
func connectionString(opts serveOptions) (string, error) {
	var cs string
	var from []string
	if opts.ConnectionString != "" {
		cs, from = opts.ConnectionString, append(from, "config file key connection-string")
	}
	if opts.ConnectionStringFile != "" {
		b, err := os.ReadFile(opts.ConnectionStringFile)
		if err != nil {
			return "", withHint(fmt.Errorf("connection string file: %w", err), "outpost node get-settings NAME > "+opts.ConnectionStringFile+" (at the root)")
		}
		if cs = strings.TrimSpace(string(b)); cs == "" {
			return "", withHint(fmt.Errorf("connection string file %s is empty", opts.ConnectionStringFile),
				"write the line `outpost node get-settings NAME` prints at the root into it")
		}
		from = append(from, "--connection-string-file")
	}
	if v, ok := os.LookupEnv(envConnectionString); ok {
		if cs = strings.TrimSpace(v); cs == "" {
			return "", withHint(fmt.Errorf("%s is set but empty", envConnectionString),
				"unset it to run a root, or set it to the line `outpost node get-settings NAME` prints")
		}
		from = append(from, envConnectionString)
	}
	if len(from) > 1 {
		return "", fmt.Errorf("connection string given %d ways (%s): give it one way", len(from), strings.Join(from, ", "))
	}
	return cs, nil
}

func overrideFromFlag(opts, flags *serveOptions, name string) {
	if dst, ok := opts.fields()[name]; ok {
		*dst = *flags.fields()[name]
	}
}

// runNode is what serve runs with its resolved settings; tests replace it to see
// what the flags, variables and config file resolved to.
var runNode = runServe

// runServe runs a node until ctx ends, then shuts it down in order: stop taking
// requests and finish those in flight, then close the event log and NATS.
func runServe(ctx context.Context, opts serveOptions) error {
	cfg, err := nodeConfig(opts)
	if err != nil {
		return usage(err, "") // a setting's value: exit 2
	}
	n, err := node.New(cfg)
	if err != nil {
		return usage(err, "")
	}
	return n.Run(ctx)
}

// nodeConfig maps serve's settings (flags over the config file) onto a node.Config.
func nodeConfig(opts serveOptions) (node.Config, error) {
	cfg := node.DefaultConfig()
	cfg.LogLevel = new(slog.LevelVar)
	var err error
	if cfg.Logger, err = newLogger(os.Stderr, opts.LogLevel, opts.LogFormat, cfg.LogLevel); err != nil {
		return cfg, err
	}
	if cfg.AnonymousPull, err = strconv.ParseBool(opts.AnonymousPull); err != nil {
		return cfg, fmt.Errorf("anonymous-pull %q: want true or false", opts.AnonymousPull)
	}
	if cfg.HTTP.MaxConnections, err = strconv.Atoi(opts.MaxConnections); err != nil {
		return cfg, fmt.Errorf("max-connections %q: want a number", opts.MaxConnections)
	}
	if cfg.HTTP.IdleTimeout, err = time.ParseDuration(opts.HTTPIdleTimeout); err != nil {
		return cfg, fmt.Errorf("http-idle-timeout %q: want a Go duration such as 2m", opts.HTTPIdleTimeout)
	}
	if cfg.MinFreeDisk, err = strconv.ParseUint(opts.MinFreeDisk, 10, 64); err != nil || cfg.MinFreeDisk == 0 {
		return cfg, fmt.Errorf("min-free-disk %q: want a number of bytes above 0", opts.MinFreeDisk)
	}
	if cfg.Scrub, err = scrubConfig(opts); err != nil {
		return cfg, err
	}
	if cfg.GC, err = parseGCSettings(opts, nil); err != nil {
		return cfg, err
	}
	if err := opts.Storage.parse(os.LookupEnv); err != nil {
		return cfg, err
	}
	cfg.Storage = opts.Storage.config
	if cfg.ConflictWindow, err = time.ParseDuration(opts.ConflictWindow); err != nil || cfg.ConflictWindow <= 0 {
		return cfg, fmt.Errorf("conflict-window %q: want a duration above 0 such as 1m", opts.ConflictWindow)
	}
	cfg.DataDir, cfg.HTTPAddr, cfg.GatewayAddr, cfg.AdvertiseHost = opts.Data, opts.Addr, opts.GatewayAddr, opts.AdvertiseAddr
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.ParentCAFile = opts.TLSCert, opts.TLSKey, opts.ParentCA
	cfg.Now = offsetClock(opts.ClockOffsetFile)
	cfg.Version = buildVersion().Version // what `outpost version` prints, on the status page
	if opts.ConnectionString != "" && opts.ClusterName != "" {
		return cfg, errors.New("--cluster-name: only root members form a cluster; a site has a connection string")
	}
	if opts.ConnectionString != "" {
		// A connected node's name, mode and message TTL come from its parent.
		cfg.ConnectionString, cfg.ParentRegistry, cfg.ParentGateway = opts.ConnectionString, opts.ParentRegistry, opts.ParentGateway
		cfg.OperatorToken = os.Getenv(envOperatorToken)
		return cfg, nil
	}
	cfg.OperatorToken = os.Getenv(envAdminToken)
	if cfg.Mode, err = events.ParseMode(opts.Mode); err != nil {
		return cfg, err
	}
	if cfg.MessageTTL, err = events.ParseDuration(opts.MessageTTL); err != nil {
		return cfg, fmt.Errorf("message TTL: %w", err)
	}
	cfg.Name = opts.Name
	if cfg.Cluster, err = opts.clusterConfig(cfg.Logger); err != nil {
		return cfg, err
	}
	cfg.TierRegistry, cfg.TierGateway = opts.TierRegistry, opts.TierGateway
	return cfg, nil
}

func scrubConfig(o serveOptions) (node.ScrubConfig, error) {
	var s node.ScrubConfig
	var err error
	if s.Interval, err = time.ParseDuration(o.ScrubInterval); err != nil || s.Interval < 0 {
		return s, fmt.Errorf("scrub-interval %q: want a duration such as 24h, or 0 for none", o.ScrubInterval)
	}
	if s.BytesPerSecond, err = strconv.ParseInt(o.ScrubRate, 10, 64); err != nil {
		return s, fmt.Errorf("scrub-rate %q: want bytes per second, 0 for no cap", o.ScrubRate)
	}
	if s.Concurrency, err = strconv.Atoi(o.ScrubConcurrency); err != nil || s.Concurrency < 1 {
		return s, fmt.Errorf("scrub-concurrency %q: want 1 or more blobs at once", o.ScrubConcurrency)
	}
	return s, nil
}

// offsetClock is time.Now, shifted by the duration a file holds when one is given
// (tests move a node's sync-window clock this way; the file is read at each call).
func offsetClock(file string) func() time.Time {
	if file == "" {
		return time.Now
	}
	return func() time.Time {
		b, err := os.ReadFile(file)
		if err != nil {
			return time.Now()
		}
		d, err := time.ParseDuration(strings.TrimSpace(string(b)))
		if err != nil {
			return time.Now()
		}
		return time.Now().Add(d)
	}
}
