package test

import (
	"os"
	"testing"

	"github.com/outpost-edge/outpost/registry/s3test"
)

// TestMain stops the S3 server (SeaweedFS) the S3 tests start, once, when the
// package's tests are done.
func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }
