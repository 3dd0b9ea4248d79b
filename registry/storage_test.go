package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStorageConfigValidateSaysWhatIsWrong(t *testing.T) {
	s3 := func(f func(*S3Config)) StorageConfig {
		c := StorageConfig{Driver: StorageS3, S3: S3Config{Bucket: "content", Endpoint: "http://127.0.0.1:8333", AccessKey: "id", SecretKey: "secret"}}
		f(&c.S3)
		return c
	}
	for _, c := range []struct {
		what string
		cfg  StorageConfig
		want string // "" is valid
	}{
		{"the default", StorageConfig{}, ""},
		{"s3", s3(func(*S3Config) {}), ""},
		{"s3 on AWS with the SDK's credentials", s3(func(c *S3Config) { c.Endpoint, c.AccessKey, c.SecretKey = "", "", "" }), ""},
		{"another driver", StorageConfig{Driver: "azure"}, `storage "azure": must be filesystem or s3`},
		{"s3 settings on the filesystem", StorageConfig{S3: S3Config{Bucket: "b"}}, "the storage is not s3"},
		{"no bucket", s3(func(c *S3Config) { c.Bucket = "" }), "no bucket named"},
		{"a bucket with a slash", s3(func(c *S3Config) { c.Bucket = "a/b" }), "no slashes"},
		{"a secret without its key", s3(func(c *S3Config) { c.AccessKey = "" }), "only one of the access key and the secret key"},
		{"an endpoint without scheme", s3(func(c *S3Config) { c.Endpoint = "127.0.0.1:8333" }), "want a URL"},
		{"an endpoint with a path", s3(func(c *S3Config) { c.Endpoint = "http://h:1/bucket" }), "without a path"},
		{"credentials in the endpoint", s3(func(c *S3Config) { c.Endpoint = "http://id:hunter2@h:1" }), "credentials in the URL are refused"},
	} {
		err := c.cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want valid", c.what, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", c.what, err, c.want)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("%s: the error shows the secret: %v", c.what, err)
		}
	}
}

func TestS3CredentialsComeFromEnvironmentOrFile(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	awsFile := file("aws", "[other]\naws_access_key_id = nope\n[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t\n")
	envFile := file("env", "# keys\nAWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=s3cr3t\n")
	halfFile := file("half", "[default]\naws_access_key_id = AKID\n")
	badFile := file("bad", "[default]\nAKID s3cr3t\n")
	env := func(kv ...string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1], true
				}
			}
			return "", false
		}
	}
	for _, c := range []struct {
		what   string
		lookup func(string) (string, bool)
		file   string
		want   string // error text; "" means AKID/s3cr3t loaded, "none" means nothing loaded
	}{
		{"environment", env(EnvS3AccessKey, "AKID", EnvS3SecretKey, "s3cr3t"), "", ""},
		{"AWS credentials file", env(), awsFile, ""},
		{"KEY=value file", env(), envFile, ""},
		{"nothing: the SDK's chain", env(), "", "none"},
		{"both ways", env(EnvS3AccessKey, "AKID", EnvS3SecretKey, "s3cr3t"), awsFile, "credentials given twice"},
		{"half in the environment", env(EnvS3AccessKey, "AKID"), "", "gives no secret key"},
		{"half in the file", env(), halfFile, "gives no secret key"},
		{"a line without =", env(), badFile, "line 2: want key = value"},
		{"no such file", env(), filepath.Join(dir, "missing"), "no such file"},
	} {
		var s S3Config
		err := s.LoadCredentials(c.lookup, c.file)
		switch {
		case c.want == "" && (err != nil || s.AccessKey != "AKID" || s.SecretKey != "s3cr3t"):
			t.Errorf("%s: %v, keys %q/%q: want AKID and the secret", c.what, err, s.AccessKey, s.SecretKey)
		case c.want == "none" && (err != nil || s.AccessKey != "" || s.SecretKey != ""):
			t.Errorf("%s: %v, keys %q: want none", c.what, err, s.AccessKey)
		case c.want != "" && c.want != "none" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", c.what, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error shows the secret: %v", c.what, err)
		}
	}
}
