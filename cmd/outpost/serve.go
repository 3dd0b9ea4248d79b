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
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
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
	anonymousPull bool
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
	limits          httpLimits
	// MinFreeDisk is the disk space (bytes) registry writes leave free for the
	// event log: under it, pushes get 507 and /readyz says the disk is full.
	MinFreeDisk string `yaml:"min-free-disk"`
	minFreeDisk uint64
	// clusterOptions make a root a member of a root tier (cluster.go).
	clusterOptions `yaml:",inline"`
	cluster        *events.ClusterConfig
}

func defaultServeOptions() serveOptions {
	return serveOptions{
		Data: "./data", Addr: "127.0.0.1:5000", GatewayAddr: "127.0.0.1:4222",
		Mode: string(registry.ReadWrite), Name: "root", MessageTTL: "P2D",
		LogLevel: "info", LogFormat: "text", AnonymousPull: "false",
		ScrubInterval: "24h", ScrubRate: "0", ScrubConcurrency: "2",
		MaxConnections: "0", HTTPIdleTimeout: defaultHTTPLimits().IdleTimeout.String(),
		MinFreeDisk:    strconv.Itoa(registry.DefaultMinFreeBytes),
		clusterOptions: clusterOptions{ClusterListen: events.DefaultClusterListen, ClusterReplicas: "0"},
	}
}

func newServeCmd() *cobra.Command {
	var configFile string
	flagOpts := defaultServeOptions()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: an OCI registry with its embedded NATS JetStream event log",
		Example: `  outpost serve                                  # root node on 127.0.0.1:5000, data in ./data
  outpost serve --data /var/lib/outpost --mode ReadOnly
  outpost serve --config /etc/outpost/outpost.yaml --log-level debug   # flags win over the file
  outpost node get-settings factory1 > factory1.cs                     # at the root, then at the site:
  outpost serve --data /var/lib/outpost --connection-string-file factory1.cs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := defaultServeOptions()
			if f := cmd.Flags().Lookup("connection-string"); f.Changed {
				return connectionStringOnCommandLine(f.Value.String())
			}
			if f := cmd.Flags().Lookup("connection-string-file"); f.Changed && strings.TrimSpace(f.Value.String()) == "" {
				// An unset variable in --connection-string-file "$FILE" must not start a root.
				return withHint(errors.New(`--connection-string-file "": no file named`), "outpost serve --connection-string-file PATH (the file `outpost node get-settings NAME` was written to)")
			}
			if configFile != "" {
				if err := loadServeConfig(configFile, &opts); err != nil {
					return err
				}
			}
			cmd.Flags().Visit(func(f *pflag.Flag) { overrideFromFlag(&opts, &flagOpts, f.Name) })
			cs, err := connectionString(opts)
			if err != nil {
				return err
			}
			opts.ConnectionString = cs
			return runServe(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file with any of the flags below as keys; flags win")
	f.StringVar(&flagOpts.Data, "data", flagOpts.Data, "data directory: registry storage and the NATS store")
	f.StringVar(&flagOpts.Addr, "addr", flagOpts.Addr, "HTTP listen address: OCI API, /metrics, /healthz, /readyz")
	f.StringVar(&flagOpts.GatewayAddr, "gateway-addr", flagOpts.GatewayAddr, "NATS listen address for this node's children")
	f.StringVar(&flagOpts.Mode, "mode", flagOpts.Mode, "ReadWrite or ReadOnly (root and standalone nodes)")
	f.StringVar(&flagOpts.Name, "name", flagOpts.Name, "this node's name, the origin of its events")
	f.StringVar(&flagOpts.MessageTTL, "message-ttl", flagOpts.MessageTTL, "how long events stay in the log, ISO 8601, P1D to P90D")
	f.StringVar(&flagOpts.LogLevel, "log-level", flagOpts.LogLevel, "debug, info, warn or error")
	f.StringVar(&flagOpts.LogFormat, "log-format", flagOpts.LogFormat, "text or json")
	f.StringVar(&flagOpts.ConnectionStringFile, "connection-string-file", "",
		"run as a connected node under a parent: a file (mode 0600) holding the line `outpost node get-settings` printed (or env "+envConnectionString+"); mode and settings then come from the root")
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
	f.StringVar(&flagOpts.ClockOffsetFile, "clock-offset-file", "", "tests only: shift the sync-window clock by the duration in this file")
	_ = f.MarkHidden("clock-offset-file")
	addClusterFlags(f, &flagOpts.clusterOptions)
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
		"min-free-disk": &o.MinFreeDisk,
	}
	maps.Copy(m, o.clusterOptions.fields())
	return m
}

// envConnectionString holds a connected node's connection string.
const envConnectionString = "OUTPOST_CONNECTION_STRING"

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

// runServe runs a node until ctx ends, then shuts it down in order: stop taking
// requests and finish those in flight, then close the event log and NATS.
func runServe(ctx context.Context, opts serveOptions) error {
	level := new(slog.LevelVar)
	logger, err := newLogger(os.Stderr, opts.LogLevel, opts.LogFormat, level)
	if err != nil {
		return err
	}
	if opts.anonymousPull, err = strconv.ParseBool(opts.AnonymousPull); err != nil {
		return fmt.Errorf("anonymous-pull %q: want true or false", opts.AnonymousPull)
	}
	opts.limits = defaultHTTPLimits()
	if opts.limits.MaxConnections, err = strconv.Atoi(opts.MaxConnections); err != nil {
		return fmt.Errorf("max-connections %q: want a number", opts.MaxConnections)
	}
	if opts.limits.IdleTimeout, err = time.ParseDuration(opts.HTTPIdleTimeout); err != nil {
		return fmt.Errorf("http-idle-timeout %q: want a Go duration such as 2m", opts.HTTPIdleTimeout)
	}
	if err := opts.limits.Validate(); err != nil {
		return err
	}
	if opts.minFreeDisk, err = strconv.ParseUint(opts.MinFreeDisk, 10, 64); err != nil || opts.minFreeDisk == 0 {
		return fmt.Errorf("min-free-disk %q: want a number of bytes above 0", opts.MinFreeDisk)
	}
	tlsCfg, err := serverTLS(opts)
	if err != nil {
		return err
	}
	scrub, err := parseScrubSettings(opts)
	if err != nil {
		return err
	}
	if opts.cluster, err = opts.clusterConfig(); err != nil {
		return err
	}
	if opts.cluster != nil {
		if opts.ConnectionString != "" {
			return errors.New("--cluster-name: only root members form a cluster; a site has a connection string")
		}
		opts.cluster.Logger = logger
	}
	n := &node{opts: opts, logger: logger, level: level, name: opts.Name, now: offsetClock(opts.ClockOffsetFile), tls: tlsCfg, scrub: scrub}
	if opts.ConnectionString != "" {
		// A connected node's name, mode and settings come from its parent.
		if n.cs, err = hierarchy.ParseConnectionString(opts.ConnectionString); err != nil {
			return err
		}
		n.name = n.cs.NodeName
		if opts.ParentRegistry != "" {
			n.cs.ParentRegistry = opts.ParentRegistry
		}
		if opts.ParentGateway != "" {
			n.cs.ParentGateway = opts.ParentGateway
		}
		if err := n.cs.Validate(); err != nil {
			return fmt.Errorf("--parent-registry/--parent-gateway: %w", err)
		}
		defer n.close()
		if err := n.start(ctx, events.DefaultMessageTTL); err != nil {
			return err
		}
		return n.runConnected(ctx)
	}
	mode, err := registry.ParseMode(opts.Mode)
	if err != nil {
		return err
	}
	ttl, err := events.ParseDuration(opts.MessageTTL)
	if err != nil {
		return fmt.Errorf("message TTL: %w", err)
	}
	logCfg := events.LogConfig{MessageTTL: ttl}
	if err := logCfg.Validate(); err != nil {
		return err
	}
	if !validNodeName(opts.Name) {
		return fmt.Errorf("name %q: 5 to 50 letters and digits, starting with a letter (or \"root\")", opts.Name)
	}
	defer n.close()
	if err := n.start(ctx, ttl); err != nil {
		return err
	}
	return n.runRoot(ctx, mode)
}

// validNodeName applies the node naming rule; "root" is the root's default name.
func validNodeName(s string) bool {
	if s == "root" {
		return true
	}
	if len(s) < 5 || len(s) > 50 {
		return false
	}
	for i, c := range s {
		letter := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
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
