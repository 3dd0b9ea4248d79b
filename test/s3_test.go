package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/registry/s3test"
)

// A root whose content is in S3: a real SeaweedFS (registry/s3test), a bucket per test.

// startS3Node starts a root on bucket b; the keys go in the environment, never on
// the command line.
func startS3Node(t *testing.T, b s3test.Bucket, args ...string) *Node {
	t.Helper()
	return StartNode(t, NodeOptions{
		Args: append([]string{"--storage", "s3", "--s3-bucket", b.Name, "--s3-endpoint", b.Endpoint, "--s3-path-style"}, args...),
		Env:  []string{"AWS_ACCESS_KEY_ID=" + b.AccessKey, "AWS_SECRET_ACCESS_KEY=" + b.SecretKey},
	})
}

// TestOCIConformanceOnS3: the pinned OCI conformance suite, every data set, 0
// failures against a root on S3 storage.
func TestOCIConformanceOnS3(t *testing.T) {
	b := s3test.NewBucket(t)
	runConformance(t, startS3Node(t, b))
	if keys := b.Keys(t, "docker/registry/v2/"); len(keys) == 0 {
		t.Error("nothing in the bucket: the suite's content went elsewhere")
	}
}

// TestS3PushPullRedirects: crane pushes an image to a root on S3 and pulls and
// verifies it. With redirects off (the default) a blob read answers the bytes
// itself: the client never learns the S3 endpoint. With --s3-redirect a blob read
// answers 307 to a presigned URL of the S3 server, which serves the bytes without
// the node's credentials.
func TestS3PushPullRedirects(t *testing.T) {
	crane := Tool(t, "crane")
	for _, c := range []struct {
		name     string
		redirect bool
	}{{"redirect off", false}, {"redirect on", true}} {
		t.Run(c.name, func(t *testing.T) {
			b := s3test.NewBucket(t)
			var args []string
			if c.redirect {
				args = append(args, "--s3-redirect")
			}
			node := startS3Node(t, b, args...)
			src, want := writeLayout(t, 3)
			ref := node.Host + "/fleet/app:v1"
			MustRun(t, clientTimeout, crane, "push", "--insecure", src, ref)
			if got := strings.TrimSpace(MustRun(t, clientTimeout, crane, "digest", "--insecure", ref)); got != want {
				t.Fatalf("digest after push: %s, want %s", got, want)
			}
			// Every blob read back and checked against its digest.
			MustRun(t, clientTimeout, crane, "validate", "--insecure", "--remote", ref)
			MustRun(t, clientTimeout, crane, "pull", "--insecure", "--format", "oci", ref, t.TempDir())
			if strings.Contains(node.Output(), b.SecretKey) {
				t.Error("the node's output shows the S3 secret key")
			}
			if keys := b.Keys(t, "docker/registry/v2/blobs/"); len(keys) < 5 {
				t.Errorf("%d blobs in the bucket, want the 3 layers, the config and the manifest: %v", len(keys), keys)
			}

			var m struct{ Layers []struct{ Digest string } }
			if err := json.Unmarshal([]byte(MustRun(t, clientTimeout, crane, "manifest", "--insecure", ref)), &m); err != nil || len(m.Layers) != 3 {
				t.Fatalf("manifest: %v, %d layers", err, len(m.Layers))
			}
			layer := m.Layers[0].Digest
			noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			req, _ := http.NewRequest(http.MethodGet, node.URL+"/v2/fleet/app/blobs/"+layer, nil)
			resp, err := noFollow.Do(Authorize(req))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if !c.redirect {
				if resp.StatusCode != http.StatusOK || sha256Of(body) != layer || loc != "" || strings.Contains(string(body), b.Endpoint) {
					t.Fatalf("blob GET with redirects off: %s, Location %q, body sha %s: want 200 and the layer %s from the node itself", resp.Status, loc, sha256Of(body), layer)
				}
				return
			}
			if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, b.Endpoint+"/"+b.Name+"/docker/registry/v2/blobs/") || !strings.Contains(loc, "X-Amz-Signature=") {
				t.Fatalf("blob GET with --s3-redirect: %s, Location %q: want 307 to a presigned URL under %s/%s", resp.Status, loc, b.Endpoint, b.Name)
			}
			direct, err := http.Get(loc) // no credentials: the signature is the grant
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(direct.Body)
			direct.Body.Close()
			if direct.StatusCode != http.StatusOK || sha256Of(body) != layer {
				t.Errorf("presigned URL: %s, body sha %s, want 200 and the layer %s", direct.Status, sha256Of(body), layer)
			}
		})
	}
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
