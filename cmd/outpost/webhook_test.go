package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWebhookSecretSources: a secret comes from a file, stdin or the environment,
// trimmed; on the command line it is refused without being echoed; too short or
// missing is refused with the reason.
func TestWebhookSecretSources(t *testing.T) {
	const secret = "0123456789abcdef0123"
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envWebhookSecret, "")
	os.Unsetenv(envWebhookSecret)
	for _, c := range []struct {
		name     string
		flags    secretFlags
		stdin    string
		env      string
		required bool
		want     string // the secret, or "error: <part of the message>"
	}{
		{"file", secretFlags{file: file}, "", "", true, secret},
		{"stdin", secretFlags{file: "-"}, "  " + secret + "\n", "", true, secret},
		{"env", secretFlags{}, "", secret, true, secret},
		{"command line", secretFlags{onCmdLine: secret}, "", "", true, "error: --secret: a secret on the command line"},
		{"short stdin", secretFlags{file: "-"}, "short\n", "", true, "error: secret: 5 characters, at least 16 needed"},
		{"missing file", secretFlags{file: file + ".nope"}, "", "", true, "error: secret file:"},
		{"none, required", secretFlags{}, "", "", true, "error: no secret"},
		{"none, optional", secretFlags{}, "", "", false, ""},
	} {
		if c.env != "" {
			t.Setenv(envWebhookSecret, c.env)
		} else {
			os.Unsetenv(envWebhookSecret)
		}
		got, err := c.flags.read(strings.NewReader(c.stdin), c.required)
		if want, ok := strings.CutPrefix(c.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q, %v; want an error saying %q", c.name, got, err, want)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error shows the secret: %v", c.name, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}
