// Package s3test runs a real S3 server for tests: SeaweedFS (`weed mini`, built into
// bin/ by `make tools`), started once per test binary on 127.0.0.1 and free ports,
// with one identity. Each test takes a bucket of its own (NewBucket).
//
// Without bin/weed the tests that need it skip, saying to run `make tools`; with
// OUTPOST_REQUIRE_S3=1 (as `make test` sets) they fail instead, so CI never passes
// on skipped S3 tests. Call Main from TestMain so the server stops with the tests.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// EnvRequire, set to 1, turns a missing bin/weed into a failure.
const EnvRequire = "OUTPOST_REQUIRE_S3"

// Region is the region the server answers for.
const Region = "us-east-1"

// Server is a running SeaweedFS.
type Server struct {
	// Endpoint is the S3 API, http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the server's one identity (all actions).
	AccessKey, SecretKey string

	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *os.File
	client *s3.S3
}

// Bucket is a bucket made for one test, on the shared server.
type Bucket struct {
	*Server
	Name string
}

var (
	once     sync.Once
	shared   *Server
	startErr error
	missing  string // why there is no server to start
)

// Start returns the package's server, starting it on first use.
func Start(t testing.TB) *Server {
	t.Helper()
	once.Do(func() {
		bin := weedBinary()
		if bin == "" {
			missing = "no S3 server: bin/weed (SeaweedFS) is not built; run `make tools` to build it (about 8 minutes once)"
			return
		}
		shared, startErr = Run(bin)
	})
	if missing != "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s (%s=1: S3 tests must run)", missing, EnvRequire)
		}
		t.Skip(missing)
	}
	if startErr != nil {
		t.Fatalf("S3 server (SeaweedFS): %v", startErr)
	}
	return shared
}

// NewBucket makes an empty bucket for the calling test on the shared server.
func NewBucket(t testing.TB) Bucket {
	t.Helper()
	s := Start(t)
	name := "t" + randomHex(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.CreateBucket(ctx, name); err != nil {
		t.Fatal(err)
	}
	return Bucket{Server: s, Name: name}
}

// CreateBucket makes an empty bucket.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	if _, err := s.client.CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// Keys lists every key in the bucket under prefix.
func (b Bucket) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	var keys []string
	err := b.client.ListObjectsV2Pages(&s3.ListObjectsV2Input{Bucket: aws.String(b.Name), Prefix: aws.String(prefix)},
		func(p *s3.ListObjectsV2Output, _ bool) bool {
			for _, o := range p.Contents {
				keys = append(keys, *o.Key)
			}
			return true
		})
	if err != nil {
		t.Fatalf("list bucket %s: %v", b.Name, err)
	}
	return keys
}

// PendingUploads counts the multipart uploads begun and neither completed nor
// aborted in the bucket.
func (b Bucket) PendingUploads(t testing.TB) int {
	t.Helper()
	out, err := b.client.ListMultipartUploads(&s3.ListMultipartUploadsInput{Bucket: aws.String(b.Name)})
	if err != nil {
		t.Fatalf("list multipart uploads of %s: %v", b.Name, err)
	}
	return len(out.Uploads)
}

// Put writes an object, as another writer of the bucket would.
func (b Bucket) Put(t testing.TB, key string, data []byte) {
	t.Helper()
	if _, err := b.client.PutObject(&s3.PutObjectInput{Bucket: aws.String(b.Name), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// Main runs the tests, then stops the server if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the package's server, if one was started.
func Stop() {
	if shared != nil {
		shared.Close()
		shared = nil
	}
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = s.log.Close()
	_ = os.RemoveAll(s.dir)
}

// weedBinary finds bin/weed in the repository, or weed on PATH.
func weedBinary() string {
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", "bin", "weed")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("weed"); err == nil {
		return p
	}
	return ""
}

// Run starts `bin mini` (SeaweedFS) with its data in a new temporary directory,
// on 127.0.0.1 and free ports, and returns once its S3 API answers. Close stops it.
func Run(bin string) (_ *Server, err error) {
	if bin, err = filepath.Abs(bin); err != nil { // it runs in its own directory
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outpost-s3-")
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if err != nil && !started {
			_ = os.RemoveAll(dir)
		}
	}()
	s := &Server{dir: dir, done: make(chan struct{})}
	var key [20]byte
	_, _ = rand.Read(key[:])
	s.AccessKey = "outpost" + hex.EncodeToString(key[:4])
	s.SecretKey = hex.EncodeToString(key[4:])
	conf, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "outpost",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}})
	confFile := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(10)
	if err != nil {
		return nil, err
	}
	port := func(i int) string { return strconv.Itoa(ports[i]) }
	s.Endpoint = "http://127.0.0.1:" + port(0)
	if s.log, err = os.Create(filepath.Join(dir, "weed.log")); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	// Every listener on its own free port (several test binaries run at once),
	// nothing beyond 127.0.0.1, no telemetry.
	s.cmd = exec.Command(bin, "mini", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3.port="+port(0), "-s3.port.grpc="+port(1), "-s3.config="+confFile,
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-master.port="+port(2), "-master.port.grpc="+port(3), "-master.telemetry=false",
		"-volume.port="+port(4), "-volume.port.grpc="+port(5),
		"-filer.port="+port(6), "-filer.port.grpc="+port(7),
		"-admin.port="+port(8), "-admin.port.grpc="+port(9), "-admin.port.legacy=0", "-admin.ui=false",
		"-webdav=false")
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// The server goes with the test binary, also when that one is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	started = true // from here on Close cleans up
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	sess, err := session.NewSession(aws.NewConfig().
		WithEndpoint(s.Endpoint).WithRegion(Region).WithS3ForcePathStyle(true).
		WithCredentials(credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, "")).
		WithMaxRetries(0))
	if err != nil {
		s.Close()
		return nil, err
	}
	s.client = s3.New(sess)
	if err := s.waitReady(60 * time.Second); err != nil {
		log := tail(filepath.Join(dir, "weed.log"), 4000)
		s.Close()
		return nil, fmt.Errorf("%w; its log:\n%s", err, log)
	}
	return s, nil
}

// waitReady waits until the S3 API lists buckets with the identity's keys.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("weed mini exited at start")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, last = s.client.ListBucketsWithContext(ctx, &s3.ListBucketsInput{})
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("S3 API not ready after %s: %v", timeout, last)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
