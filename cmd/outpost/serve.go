package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	ConnectionString string `yaml:"connection-string"`
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
}

func defaultServeOptions() serveOptions {
	return serveOptions{
		Data: "./data", Addr: "127.0.0.1:5000", GatewayAddr: "127.0.0.1:4222",
		Mode: string(registry.ReadWrite), Name: "root", MessageTTL: "P2D",
		LogLevel: "info", LogFormat: "text", AnonymousPull: "false",
		ScrubInterval: "24h", ScrubRate: "0", ScrubConcurrency: "2",
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
  outpost serve --config /etc/outpost/outpost.yaml --log-level debug   # flags win over the file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := defaultServeOptions()
			opts.ConnectionString = os.Getenv("OUTPOST_CONNECTION_STRING")
			if configFile != "" {
				if err := loadServeConfig(configFile, &opts); err != nil {
					return err
				}
			}
			cmd.Flags().Visit(func(f *pflag.Flag) { overrideFromFlag(&opts, &flagOpts, f.Name) })
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
	f.StringVar(&flagOpts.ConnectionString, "connection-string", "",
		"run as a connected node under a parent (from `outpost node get-settings`; env OUTPOST_CONNECTION_STRING); mode and settings then come from the root")
	f.StringVar(&flagOpts.AdvertiseAddr, "advertise-addr", "", "host this node's children reach it at (default: the listen addresses' host)")
	f.StringVar(&flagOpts.ParentRegistry, "parent-registry", "", "reach the parent's registry at this host:port instead of the connection string's")
	f.StringVar(&flagOpts.ParentGateway, "parent-gateway", "", "reach the parent's gateway at this host:port instead of the connection string's")
	f.StringVar(&flagOpts.AnonymousPull, "anonymous-pull", flagOpts.AnonymousPull, "root only: let clients without credentials pull (true or false)")
	f.Lookup("anonymous-pull").NoOptDefVal = "true"
	f.StringVar(&flagOpts.TLSCert, "tls-cert", "", "PEM certificate (chain) for HTTPS and the gateway's TLS")
	f.StringVar(&flagOpts.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&flagOpts.ParentCA, "parent-ca", "", "PEM CA certificate that signed the parent's (with ParentEndpointProtocol=https)")
	f.StringVar(&flagOpts.ScrubInterval, "scrub-interval", flagOpts.ScrubInterval, "how often every stored blob is checked against its digest (0: never; `outpost scrub` any time)")
	f.StringVar(&flagOpts.ScrubRate, "scrub-rate", flagOpts.ScrubRate, "bytes per second a scrub may read (0: no cap)")
	f.StringVar(&flagOpts.ScrubConcurrency, "scrub-concurrency", flagOpts.ScrubConcurrency, "blobs a scrub hashes at once")
	f.StringVar(&flagOpts.ClockOffsetFile, "clock-offset-file", "", "tests only: shift the sync-window clock by the duration in this file")
	_ = f.MarkHidden("clock-offset-file")
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
	return map[string]*string{
		"data": &o.Data, "addr": &o.Addr, "gateway-addr": &o.GatewayAddr, "mode": &o.Mode,
		"name": &o.Name, "message-ttl": &o.MessageTTL, "log-level": &o.LogLevel,
		"log-format": &o.LogFormat, "connection-string": &o.ConnectionString,
		"advertise-addr": &o.AdvertiseAddr, "clock-offset-file": &o.ClockOffsetFile,
		"parent-registry": &o.ParentRegistry, "parent-gateway": &o.ParentGateway,
		"anonymous-pull": &o.AnonymousPull, "tls-cert": &o.TLSCert, "tls-key": &o.TLSKey,
		"parent-ca": &o.ParentCA, "scrub-interval": &o.ScrubInterval, "scrub-rate": &o.ScrubRate,
		"scrub-concurrency": &o.ScrubConcurrency,
	}
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
	tlsCfg, err := serverTLS(opts)
	if err != nil {
		return err
	}
	scrub, err := parseScrubSettings(opts)
	if err != nil {
		return err
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
