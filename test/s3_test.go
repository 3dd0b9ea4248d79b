package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/registry/s3test"
	"github.com/outpost-edge/outpost/test/content"
)

// A root whose content is in S3: a real SeaweedFS (registry/s3test), a bucket per test.

// startS3Node starts a root on bucket b; the keys go in the environment, never on
// the command line.
func startS3Node(t *testing.T, b s3test.Bucket, args ...string) *Node {
	t.Helper()
	return StartNode(t, NodeOptions{Args: append(s3Args(b), args...), Env: s3Env(b)})
}

func s3Args(b s3test.Bucket) []string {
	return []string{"--storage", "s3", "--s3-bucket", b.Name, "--s3-endpoint", b.Endpoint, "--s3-path-style"}
}

func s3Env(b s3test.Bucket) []string {
	return []string{"AWS_ACCESS_KEY_ID=" + b.AccessKey, "AWS_SECRET_ACCESS_KEY=" + b.SecretKey}
}

// TestOCIConformanceOnS3: the pinned OCI conformance suite, every data set, 0
// failures against a root on S3 storage, with blob reads served by the node (the
// default) and redirected to S3.
func TestOCIConformanceOnS3(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{{"redirect off", nil}, {"redirect on", []string{"--s3-redirect"}}} {
		t.Run(c.name, func(t *testing.T) {
			b := s3test.NewBucket(t)
			runConformance(t, startS3Node(t, b, c.args...))
			if keys := b.Keys(t, "docker/registry/v2/"); len(keys) == 0 {
				t.Error("nothing in the bucket: the suite's content went elsewhere")
			}
		})
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

// TestS3TreeReplicates: a root and a ReadWrite site, each on its own bucket (the
// root with redirects on). A push at the root reaches the site (blobs written in
// process into the site's bucket, the referrer into its index there) and a push at
// the site reaches the root; every blob reads back whole at the other end.
func TestS3TreeReplicates(t *testing.T) {
	crane := Tool(t, "crane")
	rootBucket, siteBucket := s3test.NewBucket(t), s3test.NewBucket(t)
	root := startS3Node(t, rootBucket, "--s3-redirect")
	site := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"fleet/*"},
		ServeArgs: s3Args(siteBucket), ServeEnv: s3Env(siteBucket)})

	down := push(t, root, "fleet/app:1", content.Image(t, 3))
	r, err := name.ParseReference(root.Host+"/fleet/app@"+down, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r, Auth)
	if err != nil {
		t.Fatal(err)
	}
	sbom := content.Artifact(t, "application/spdx+json", desc)
	push(t, root, "fleet/app@"+content.Digest(t, sbom), sbom)
	up := push(t, site, "fleet/app:2", content.Image(t, 2))

	eventuallyAt(t, "fleet/app:1", down, site)
	eventuallyAt(t, "fleet/app:2", up, root)
	MustRun(t, clientTimeout, crane, "validate", "--insecure", "--remote", site.Host+"/fleet/app:1")
	MustRun(t, clientTimeout, crane, "validate", "--insecure", "--remote", root.Host+"/fleet/app:2")
	atSite, err := name.NewDigest(site.Host+"/fleet/app@"+down, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, replicationTimeout, func() error {
		idx, err := remote.Referrers(atSite, Auth)
		if err != nil {
			return err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		if len(m.Manifests) != 1 || m.Manifests[0].Digest.String() != content.Digest(t, sbom) {
			return fmt.Errorf("referrers of fleet/app@%s at sitea: %v, want the sbom", down, m.Manifests)
		}
		return nil
	})
	for _, c := range []struct {
		b    s3test.Bucket
		what string
	}{{siteBucket, "site"}, {rootBucket, "root"}} {
		if keys := c.b.Keys(t, "outpost/v1/referrers/fleet/app/"); len(keys) == 0 {
			t.Errorf("no referrers index in the %s's bucket", c.what)
		}
		if keys := c.b.Keys(t, "docker/registry/v2/outpost-incoming/"); len(keys) != 0 {
			t.Errorf("blobs left aside in the %s's bucket: %v", c.what, keys)
		}
	}
}
