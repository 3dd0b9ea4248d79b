package registry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws" // --storage s3
)

// Where a node keeps its content: the filesystem under its data directory (the
// default, and what sites use), or an S3 bucket that several root members share.
// Everything Outpost keeps beside the content (the referrers index, sha512 alias
// links, quarantined blobs) goes through the same storage driver, so it lives in
// the bucket too.

// StorageDriver names a storage backend.
type StorageDriver string

// The storage backends.
const (
	StorageFilesystem StorageDriver = "filesystem"
	StorageS3         StorageDriver = "s3"
)

// ParseStorageDriver accepts the driver names as written in flags and config files.
func ParseStorageDriver(s string) (StorageDriver, error) {
	switch d := StorageDriver(s); d {
	case "":
		return StorageFilesystem, nil
	case StorageFilesystem, StorageS3:
		return d, nil
	}
	return "", fmt.Errorf("storage %q: must be filesystem or s3", s)
}

// StorageConfig says where content is stored. The zero value is the filesystem
// under Config.Dir.
type StorageConfig struct {
	// Driver is filesystem (default) or s3.
	Driver StorageDriver
	// S3 configures the s3 driver.
	S3 S3Config
	// CheckTimeout bounds a look at whether the storage answers (at start and for
	// readiness): an object store that stops answering must not hang either.
	// Default DefaultStorageCheckTimeout.
	CheckTimeout time.Duration
}

// DefaultStorageCheckTimeout is StorageConfig.CheckTimeout's default.
const DefaultStorageCheckTimeout = 10 * time.Second

// S3Config configures S3 storage.
type S3Config struct {
	// Bucket holds the content; it must exist. Required.
	Bucket string
	// Region is the bucket's region; default DefaultS3Region.
	Region string
	// Endpoint is the S3 server's URL (http or https), for servers other than AWS
	// (SeaweedFS, Ceph, ...). Empty: AWS itself.
	Endpoint string
	// PathStyle addresses the bucket as ENDPOINT/BUCKET rather than
	// BUCKET.ENDPOINT, as most servers other than AWS want.
	PathStyle bool
	// AccessKey and SecretKey are the credentials. They come from the environment
	// or a file (LoadCredentials), never from a command line. Both empty: the AWS
	// SDK's own chain (an instance or pod role).
	AccessKey string
	SecretKey string
	// Redirect answers blob reads with a 307 to a presigned URL of the object
	// store, so the bytes do not pass through the node. Off by default: clients
	// must then reach the object store themselves, and a site's pull would bypass
	// the node's own checks of quarantined blobs.
	Redirect bool
	// RootDirectory is a key prefix inside the bucket; empty: the bucket's root.
	RootDirectory string
}

// DefaultS3Region is the region when none is given: what most S3 servers other
// than AWS expect.
const DefaultS3Region = "us-east-1"

// The environment variables S3 credentials are read from, as the AWS tools name them.
const (
	EnvS3AccessKey = "AWS_ACCESS_KEY_ID"
	EnvS3SecretKey = "AWS_SECRET_ACCESS_KEY"
)

// Validate names the first setting that is missing or wrong.
func (c *StorageConfig) Validate() error {
	if _, err := ParseStorageDriver(string(c.Driver)); err != nil {
		return err
	}
	if c.CheckTimeout < 0 {
		return fmt.Errorf("storage: check timeout %s is negative", c.CheckTimeout)
	}
	if c.Driver != StorageS3 {
		if c.S3 != (S3Config{}) {
			return errors.New("storage: s3 settings given but the storage is not s3 (set storage: s3)")
		}
		return nil
	}
	s := c.S3
	switch {
	case s.Bucket == "":
		return errors.New("storage s3: no bucket named")
	case strings.ContainsAny(s.Bucket, "/ \t\n"):
		return fmt.Errorf("storage s3: bucket %q: a bucket name has no slashes or spaces", s.Bucket)
	case (s.AccessKey == "") != (s.SecretKey == ""):
		return fmt.Errorf("storage s3: only one of the access key and the secret key is given (%s and %s, or a credentials file)", EnvS3AccessKey, EnvS3SecretKey)
	case strings.ContainsAny(s.RootDirectory, " \t\n"):
		return fmt.Errorf("storage s3: root directory %q has spaces", s.RootDirectory)
	}
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("storage s3: endpoint %q: want a URL such as https://s3.example.com:9000", s.Endpoint)
		}
		if u.User != nil {
			return fmt.Errorf("storage s3: endpoint %s: credentials in the URL are refused; give them in %s and %s or a credentials file", u.Redacted(), EnvS3AccessKey, EnvS3SecretKey)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("storage s3: endpoint %q: want scheme://host[:port] without a path or query", s.Endpoint)
		}
	}
	return nil
}

// LoadCredentials fills in the S3 credentials from the environment (lookup is
// os.LookupEnv) or, when file is not empty, from that file: an AWS credentials
// file (the [default] profile's aws_access_key_id and aws_secret_access_key) or
// lines of KEY=value with the two environment variables' names. Giving both is
// an error: one place says which credentials are used.
func (c *S3Config) LoadCredentials(lookup func(string) (string, bool), file string) error {
	id, _ := lookup(EnvS3AccessKey)
	secret, _ := lookup(EnvS3SecretKey)
	fromEnv := id != "" || secret != "" // set but empty counts as not given
	if fromEnv && file != "" {
		return fmt.Errorf("storage s3: credentials given twice (%s/%s in the environment and the file %s): give them one way", EnvS3AccessKey, EnvS3SecretKey, file)
	}
	if file != "" {
		var err error
		if id, secret, err = readS3Credentials(file); err != nil {
			return err
		}
	}
	if fromEnv || file != "" {
		if id == "" || secret == "" {
			from := "the environment (" + EnvS3AccessKey + ", " + EnvS3SecretKey + ")"
			if file != "" {
				from = "the credentials file " + file
			}
			return fmt.Errorf("storage s3: %s gives %s: want both an access key and a secret key", from, missingKey(id, secret))
		}
		c.AccessKey, c.SecretKey = id, secret
	}
	return nil
}

func missingKey(id, secret string) string {
	switch {
	case id == "" && secret == "":
		return "neither key"
	case id == "":
		return "no access key"
	}
	return "no secret key"
}

// readS3Credentials reads an AWS credentials file's default profile, or
// KEY=value lines.
func readS3Credentials(file string) (id, secret string, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("storage s3: credentials file: %w", err)
	}
	section := "default"
	found := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			// The line may hold a secret: name it by number only.
			return "", "", fmt.Errorf("storage s3: credentials file %s line %d: want key = value", file, n)
		}
		if section != "default" {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "aws_access_key_id":
			id, found = strings.TrimSpace(v), true
		case "aws_secret_access_key":
			secret, found = strings.TrimSpace(v), true
		}
	}
	if !found {
		return "", "", fmt.Errorf("storage s3: credentials file %s: no aws_access_key_id nor aws_secret_access_key in its default profile", file)
	}
	return id, secret, nil
}

// driverParameters are distribution's parameters for the storage driver.
func (c *Config) driverParameters() (name string, params map[string]any) {
	if c.Storage.Driver != StorageS3 {
		return "filesystem", map[string]any{"rootdirectory": c.Dir}
	}
	s := c.Storage.S3
	region := s.Region
	if region == "" {
		region = DefaultS3Region
	}
	params = map[string]any{
		"bucket":         s.Bucket,
		"region":         region,
		"regionendpoint": s.Endpoint,
		"forcepathstyle": s.PathStyle,
		"rootdirectory":  s.RootDirectory,
	}
	if s.AccessKey != "" {
		params["accesskey"], params["secretkey"] = s.AccessKey, s.SecretKey
	}
	return "s3", params
}

// storageName says where content is, for messages: never a credential.
func (c *Config) storageName() string {
	if c.Storage.Driver != StorageS3 {
		return c.Dir
	}
	s := c.Storage.S3
	where := "s3://" + s.Bucket + "/" + strings.TrimPrefix(s.RootDirectory, "/")
	if s.Endpoint != "" {
		where += " at " + s.Endpoint
	}
	return where
}
