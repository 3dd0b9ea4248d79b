package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/events"
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
}

func defaultServeOptions() serveOptions {
	return serveOptions{
		Data: "./data", Addr: "127.0.0.1:5000", GatewayAddr: "127.0.0.1:4222",
		Mode: string(registry.ReadWrite), Name: "root", MessageTTL: "P2D",
		LogLevel: "info", LogFormat: "text",
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

func overrideFromFlag(opts, flags *serveOptions, name string) {
	switch name {
	case "data":
		opts.Data = flags.Data
	case "addr":
		opts.Addr = flags.Addr
	case "gateway-addr":
		opts.GatewayAddr = flags.GatewayAddr
	case "mode":
		opts.Mode = flags.Mode
	case "name":
		opts.Name = flags.Name
	case "message-ttl":
		opts.MessageTTL = flags.MessageTTL
	case "log-level":
		opts.LogLevel = flags.LogLevel
	case "log-format":
		opts.LogFormat = flags.LogFormat
	}
}

// runServe runs a node until ctx ends, then shuts it down in order: stop taking
// requests and finish those in flight, then close the event log and NATS.
func runServe(ctx context.Context, opts serveOptions) error {
	logger, err := newLogger(os.Stderr, opts.LogLevel, opts.LogFormat)
	if err != nil {
		return err
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
	for _, dir := range []string{opts.Data, filepath.Join(opts.Data, "registry"), filepath.Join(opts.Data, "nats")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}

	ns, err := events.StartServer(events.ServerConfig{
		Dir: filepath.Join(opts.Data, "nats"), Addr: opts.GatewayAddr, Name: opts.Name,
	})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	nc, err := ns.Connect("outpost-" + opts.Name)
	if err != nil {
		return err
	}
	defer nc.Close()

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	logCfg.Registerer = metrics
	eventLog, err := events.OpenLog(ctx, nc, logCfg)
	if err != nil {
		return err
	}
	reg, err := registry.New(ctx, registry.Config{
		Dir: filepath.Join(opts.Data, "registry"), Mode: mode, Node: opts.Name,
		Publisher: eventLog, Registerer: metrics, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer reg.Close()

	mux := http.NewServeMux()
	mux.Handle("/v2/", reg)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context(), ns, eventLog, reg); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.Handle("/outpost/v1/events", events.Handler(eventLog))
	mux.Handle("/outpost/v1/repositories/", reg.RepositoryHandler())

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", opts.Addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("serving", "node", opts.Name, "mode", mode, "http", ln.Addr().String(),
		"gateway", ns.Addr().String(), "data", opts.Data, "message_ttl", events.FormatDuration(ttl))

	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "node", opts.Name)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("http shutdown", "err", err)
	}
	if err := nc.Drain(); err != nil {
		logger.Warn("nats drain", "err", err)
	}
	logger.Info("stopped", "node", opts.Name)
	return nil
}

func ready(ctx context.Context, ns *events.Server, l *events.Log, reg *registry.Registry) error {
	if !ns.Running() {
		return errors.New("nats: jetstream not running")
	}
	if _, err := l.Stats(ctx); err != nil {
		return err
	}
	return reg.Ready(ctx)
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
