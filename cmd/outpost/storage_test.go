package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefusesBadStorageSettingsNamingThem: storage settings from flags and
// the config file are checked before anything starts; secrets are never flags.
func TestServeRefusesBadStorageSettingsNamingThem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "outpost.yaml")
	data := filepath.Join(dir, "data")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	for _, c := range []struct {
		config string
		args   []string
		want   string
	}{
		{"", []string{"--storage", "azure"}, `storage "azure": must be filesystem or s3`},
		{"storage: s3\n", nil, "storage s3: no bucket named"},
		{"storage: s3\ns3-bucket: b\ns3-endpoint: 127.0.0.1:8333\n", nil, `endpoint "127.0.0.1:8333": want a URL`},
		{"", []string{"--s3-bucket", "b"}, "add --storage s3"},
		{"", []string{"--storage", "s3", "--s3-bucket", "b", "--s3-redirect=sometimes"}, `s3-redirect "sometimes"`},
		{"", []string{"--storage", "s3", "--s3-bucket", "b", "--s3-credentials-file", filepath.Join(dir, "none")}, "credentials file"},
		{"", []string{"--storage", "s3", "--s3-bucket", "b", "--s3-secret-key", "x"}, "unknown flag: --s3-secret-key"},
		{"s3-secret-key: x\n", nil, "s3-secret-key"},
	} {
		args := append([]string{"--data", data}, c.args...)
		if c.config != "" {
			if err := os.WriteFile(file, []byte(c.config), 0o600); err != nil {
				t.Fatal(err)
			}
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

// TestStorageSettingsFromFileAndFlags: the config file's storage keys make an S3
// config, a flag wins over the file, the keys come from the environment.
func TestStorageSettingsFromFileAndFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "outpost.yaml")
	cfg := "storage: s3\ns3-bucket: content\ns3-endpoint: http://127.0.0.1:8333\ns3-path-style: \"true\"\ns3-root-directory: /tier1\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := defaultServeOptions()
	if err := loadServeConfig(file, &opts); err != nil {
		t.Fatal(err)
	}
	flags := defaultServeOptions()
	flags.Storage.S3Redirect = "true"
	overrideFromFlag(&opts, &flags, "s3-redirect")
	env := map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
	if err := opts.Storage.parse(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	s := opts.Storage.config.S3
	if opts.Storage.config.Driver != "s3" || s.Bucket != "content" || s.Endpoint != "http://127.0.0.1:8333" || !s.PathStyle ||
		s.RootDirectory != "/tier1" || !s.Redirect || s.AccessKey != "AKID" || s.SecretKey != "s3cr3t" {
		t.Errorf("storage config = %+v", opts.Storage.config)
	}
}
