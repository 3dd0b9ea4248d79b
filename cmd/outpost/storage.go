package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/registry"
)

// storageOptions are the serve settings that say where content is stored (the
// YAML keys are the flag names). S3 credentials are never among them: they come
// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --s3-credentials-file.
type storageOptions struct {
	Storage         string `yaml:"storage"`
	S3Bucket        string `yaml:"s3-bucket"`
	S3Region        string `yaml:"s3-region"`
	S3Endpoint      string `yaml:"s3-endpoint"`
	S3PathStyle     string `yaml:"s3-path-style"`
	S3RootDirectory string `yaml:"s3-root-directory"`
	S3Redirect      string `yaml:"s3-redirect"`
	S3Credentials   string `yaml:"s3-credentials-file"`
	config          registry.StorageConfig
}

func defaultStorageOptions() storageOptions {
	return storageOptions{Storage: string(registry.StorageFilesystem), S3PathStyle: "false", S3Redirect: "false"}
}

func (o *storageOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Storage, "storage", o.Storage, "where content is stored: filesystem (under --data) or s3 (the --s3-* settings; credentials from "+registry.EnvS3AccessKey+" and "+registry.EnvS3SecretKey+" or --s3-credentials-file)")
	f.StringVar(&o.S3Bucket, "s3-bucket", o.S3Bucket, "S3 bucket holding the content (it must exist)")
	f.StringVar(&o.S3Region, "s3-region", o.S3Region, "S3 region (default "+registry.DefaultS3Region+")")
	f.StringVar(&o.S3Endpoint, "s3-endpoint", o.S3Endpoint, "S3 server URL for servers other than AWS, e.g. http://127.0.0.1:8333")
	f.StringVar(&o.S3PathStyle, "s3-path-style", o.S3PathStyle, "address the bucket as ENDPOINT/BUCKET (most servers other than AWS want true)")
	f.Lookup("s3-path-style").NoOptDefVal = "true"
	f.StringVar(&o.S3RootDirectory, "s3-root-directory", o.S3RootDirectory, "key prefix inside the bucket (default: the bucket's root)")
	f.StringVar(&o.S3Redirect, "s3-redirect", o.S3Redirect, "answer blob reads with a 307 to a presigned S3 URL (clients must reach the S3 server)")
	f.Lookup("s3-redirect").NoOptDefVal = "true"
	f.StringVar(&o.S3Credentials, "s3-credentials-file", o.S3Credentials, "file with the S3 keys: an AWS credentials file ([default] aws_access_key_id, aws_secret_access_key) or KEY=value lines")
}

func (o *storageOptions) fields() map[string]*string {
	return map[string]*string{
		"storage": &o.Storage, "s3-bucket": &o.S3Bucket, "s3-region": &o.S3Region, "s3-endpoint": &o.S3Endpoint,
		"s3-path-style": &o.S3PathStyle, "s3-root-directory": &o.S3RootDirectory, "s3-redirect": &o.S3Redirect,
		"s3-credentials-file": &o.S3Credentials,
	}
}

// parse checks the settings and reads the S3 credentials (lookup is os.LookupEnv).
func (o *storageOptions) parse(lookup func(string) (string, bool)) error {
	driver, err := registry.ParseStorageDriver(o.Storage)
	if err != nil {
		return err
	}
	c := registry.StorageConfig{Driver: driver}
	if driver == registry.StorageS3 {
		c.S3 = registry.S3Config{Bucket: o.S3Bucket, Region: o.S3Region, Endpoint: o.S3Endpoint, RootDirectory: o.S3RootDirectory}
		if c.S3.PathStyle, err = strconv.ParseBool(o.S3PathStyle); err != nil {
			return fmt.Errorf("s3-path-style %q: want true or false", o.S3PathStyle)
		}
		if c.S3.Redirect, err = strconv.ParseBool(o.S3Redirect); err != nil {
			return fmt.Errorf("s3-redirect %q: want true or false", o.S3Redirect)
		}
		if err := c.S3.LoadCredentials(lookup, o.S3Credentials); err != nil {
			return err
		}
	} else if o.S3Bucket != "" || o.S3Endpoint != "" || o.S3Credentials != "" {
		return fmt.Errorf("storage %s: --s3-* settings given; add --storage s3 to use them", driver)
	}
	if err := c.Validate(); err != nil {
		return err
	}
	o.config = c
	return nil
}
