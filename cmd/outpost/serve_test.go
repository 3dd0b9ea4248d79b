package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveErr runs `outpost serve` with args and returns its error; each case here is
// refused before anything starts or is written.
func serveErr(t *testing.T, args ...string) error {
	t.Helper()
	cmd := newRootCmd()
	cmd.SetArgs(append([]string{"serve"}, args...))
	cmd.SetOut(new(strings.Builder))
	return cmd.ExecuteContext(context.Background())
}

func TestServeRefusesBadSettingsNamingThem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "outpost.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	for _, c := range []struct {
		config string
		args   []string
		want   string
	}{
		{"", []string{"--mode", "Sideways"}, `mode "Sideways"`},
		{"mode: Sideways\n", nil, `mode "Sideways"`},
		{"mode: ReadOnly\n", []string{"--mode", "Bogus"}, `mode "Bogus"`}, // the flag wins over the file
		{"", []string{"--message-ttl", "P91D"}, "P1D to P90D"},
		{"", []string{"--message-ttl", "PT12H"}, "P1D to P90D"},
		{"", []string{"--message-ttl", "2 days"}, "ISO 8601"},
		{"", []string{"--name", "ab"}, `name "ab"`},
		{"", []string{"--log-level", "loud"}, `log level "loud"`},
		{"adr: 127.0.0.1:6000\n", nil, "adr"},
		{"", []string{"--tls-cert", "cert.pem"}, "--tls-cert and --tls-key go together"},
		{"", []string{"--tls-cert", "none.pem", "--tls-key", "none.key"}, "certificate none.pem"},
		{"", []string{"--anonymous-pull=maybe"}, `anonymous-pull "maybe"`},
		{"", []string{"--conflict-window", "0s"}, `conflict-window "0s"`},
		{"conflict-window: soon\n", nil, `conflict-window "soon"`},
	} {
		args := append([]string{"--data", data}, c.args...)
		if c.config != "" {
			write(c.config)
			args = append(args, "--config", file)
		}
		err := serveErr(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v with config %q: %v, want an error with %q", c.args, c.config, err, c.want)
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("refused settings created the data directory: %v", err)
	}
}

// TestServeMapsSettingsOntoNodeConfig: serve's settings and the token variables
// land in node.Config: the admin token's variable for a root, the operator
// token's for a connected node, never the other one.
func TestServeMapsSettingsOntoNodeConfig(t *testing.T) {
	t.Setenv(envAdminToken, "admin-secret")
	t.Setenv(envOperatorToken, "operator-secret")
	opts := defaultServeOptions()
	opts.Data, opts.Addr, opts.Name, opts.Mode, opts.MessageTTL = "/srv/outpost", "127.0.0.1:0", "factory1", "ReadOnly", "P7D"
	opts.ScrubInterval, opts.MaxConnections, opts.AnonymousPull = "1h", "64", "true"
	cfg, err := nodeConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/srv/outpost" || cfg.HTTPAddr != "127.0.0.1:0" || cfg.Name != "factory1" || cfg.Mode != "ReadOnly" ||
		cfg.MessageTTL != 7*24*time.Hour || cfg.Scrub.Interval != time.Hour || cfg.HTTP.MaxConnections != 64 || !cfg.AnonymousPull {
		t.Errorf("root settings mapped to %+v", cfg)
	}
	if cfg.OperatorToken != "admin-secret" {
		t.Errorf("a root's operator token %q, want the admin token's variable", cfg.OperatorToken)
	}
	opts.ConnectionString = "ConnectedRegistryName=sitea"
	if cfg, err = nodeConfig(opts); err != nil {
		t.Fatal(err)
	}
	if cfg.OperatorToken != "operator-secret" || cfg.ConnectionString != opts.ConnectionString {
		t.Errorf("a connected node's operator token %q and connection string %q", cfg.OperatorToken, cfg.ConnectionString)
	}
}
