package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
