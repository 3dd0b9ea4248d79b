package registry

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
	"github.com/outpost-edge/outpost/registry/s3test"
	"github.com/outpost-edge/outpost/test/content"
)

// testRegistry is a registry served over real HTTP with a real embedded NATS and
// filesystem storage, all under one temporary directory.
type testRegistry struct {
	*Registry
	URL    string
	Host   string
	Log    *events.Log
	NATS   *events.Server
	dir    string
	server *httptest.Server
}

// startRegistry starts a node's registry and registers its cleanup.
func startRegistry(t testing.TB, mode Mode) *testRegistry {
	t.Helper()
	return startRegistryIn(t, t.TempDir(), mode)
}

// startRegistryIn starts a registry on dir; opts change its Config (Auth, Now...).
// It serves the token endpoint too.
func startRegistryIn(t testing.TB, dir string, mode Mode, opts ...func(*Config)) *testRegistry {
	t.Helper()
	ns, _ := eventstest.StartServer(t, events.ServerConfig{Dir: dir + "/nats", Name: "testnode"})
	return startRegistryOn(t, ns, dir, mode, opts...)
}

// startRegistryOn starts a registry with its storage under dir and its event log in
// ns; several may share both (the members of a root tier).
func startRegistryOn(t testing.TB, ns *events.Server, dir string, mode Mode, opts ...func(*Config)) *testRegistry {
	t.Helper()
	ctx := context.Background()
	nc, err := ns.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	log, err := events.OpenLog(ctx, nc, events.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir + "/registry", Mode: mode, Node: "testnode", Publisher: log}
	for _, o := range opts {
		o(&cfg)
	}
	reg, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Not a ServeMux: it would clean the bad paths some tests send on purpose.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == TokenPath {
			reg.TokenHandler().ServeHTTP(w, req)
			return
		}
		reg.ServeHTTP(w, req)
	}))
	tr := &testRegistry{Registry: reg, URL: srv.URL, Host: strings.TrimPrefix(srv.URL, "http://"),
		Log: log, NATS: ns, dir: dir, server: srv}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *testRegistry) stop() {
	tr.server.Close()
	_ = tr.Registry.Close()
}

func (tr *testRegistry) ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(tr.Host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// events reads the whole log.
func (tr *testRegistry) events(t testing.TB) []*events.Event {
	t.Helper()
	var all []*events.Event
	if err := tr.Log.Read(context.Background(), events.ReadOptions{}, func(e *events.Event) error {
		all = append(all, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return all
}

func (tr *testRegistry) do(t testing.TB, method, path, contentType string, body []byte) *http.Response {
	t.Helper()
	return tr.send(t, method, path, "", contentType, body)
}

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.FatalLevel) // the embedded app logs every request
	os.Exit(s3test.Main(m))            // stops the S3 server the S3 tests started
}

func TestPushAndDeleteBecomeEvents(t *testing.T) {
	tr := startRegistry(t, ReadWrite)
	byTag, byDigest := content.Image(t, 2), content.Image(t, 2)
	tagRef := tr.ref(t, "team/app:1.0")
	if err := remote.Write(tagRef, byTag); err != nil {
		t.Fatal(err)
	}
	digestRef := tr.ref(t, "team/app@"+content.Digest(t, byDigest))
	if err := remote.Write(digestRef, byDigest); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(tagRef); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(digestRef); err != nil {
		t.Fatal(err)
	}

	got := tr.events(t)
	want := []events.Event{
		{Action: events.ActionPush, Repository: "team/app", Tag: "1.0", Digest: content.Digest(t, byTag), MediaType: content.MediaType(t, byTag)},
		{Action: events.ActionPush, Repository: "team/app", Digest: content.Digest(t, byDigest), MediaType: content.MediaType(t, byDigest)},
		{Action: events.ActionTagDelete, Repository: "team/app", Tag: "1.0", Digest: content.Digest(t, byTag)},
		{Action: events.ActionManifestDelete, Repository: "team/app", Digest: content.Digest(t, byDigest)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d: %v", len(got), len(want), got)
	}
	ids := map[string]bool{}
	for i, w := range want {
		g := got[i]
		if g.Action != w.Action || g.Repository != w.Repository || g.Tag != w.Tag || g.Digest != w.Digest || g.MediaType != w.MediaType {
			t.Errorf("event %d = %s, want action=%s repo=%s tag=%s digest=%s mediaType=%s", i, g, w.Action, w.Repository, w.Tag, w.Digest, w.MediaType)
		}
		if g.Origin != "testnode" || g.ID == "" || g.Time.IsZero() || g.Sequence != uint64(i+1) || ids[g.ID] {
			t.Errorf("event %d: origin=%q id=%q time=%v seq=%d: want origin testnode, a fresh id, a time and seq %d", i, g.Origin, g.ID, g.Time, g.Sequence, i+1)
		}
		ids[g.ID] = true
		if w.Action == events.ActionPush && g.Size == 0 {
			t.Errorf("event %d: push without manifest size", i)
		}
	}
}

func TestPublishFailureFailsThePushAndMarksUnhealthy(t *testing.T) {
	tr := startRegistry(t, ReadWrite)
	if err := tr.Ready(context.Background()); err != nil {
		t.Fatalf("fresh node not ready: %v", err)
	}
	tr.NATS.Shutdown() // JetStream is gone: no event can be acknowledged
	err := remote.Write(tr.ref(t, "app:1"), content.Image(t, 2), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	var terr *transport.Error
	// The publish's retries ran out on timeouts: 503, try again (TestUnrecordedChangeIs503).
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("push without an event log: err = %v, want a 503", err)
	}
	if err := tr.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "event-log") {
		t.Fatalf("Ready after a failed publish = %v, want an event-log failure", err)
	}
}

// readOCIErrors reads a response body as an OCI error body (errors.go's ociError); ok is false when it is
// not one, and data is the body as read.
func readOCIErrors(resp *http.Response) (errs []ociError, data []byte, ok bool) {
	var body struct {
		Errors []ociError `json:"errors"`
	}
	data, _ = io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &body); err != nil || len(body.Errors) == 0 {
		return nil, data, false
	}
	return body.Errors, data, true
}

// ociMessage reads an OCI error body as "CODE: message" lines, for refusals that
// must say why; a body that is not one reads as itself.
func ociMessage(resp *http.Response) string {
	errs, data, ok := readOCIErrors(resp)
	if !ok {
		return string(data)
	}
	var lines []string
	for _, e := range errs {
		lines = append(lines, e.Code+": "+e.Message)
	}
	return strings.Join(lines, "\n")
}

// ociErrors decodes an OCI error body.
func ociErrors(t testing.TB, resp *http.Response) []string {
	t.Helper()
	errs, data, ok := readOCIErrors(resp)
	if !ok {
		t.Fatalf("%s %s: body %q is not an OCI error body", resp.Request.Method, resp.Request.URL.Path, data)
	}
	var codes []string
	for _, e := range errs {
		if e.Message == "" {
			t.Errorf("%s: error %s has no message", resp.Request.URL.Path, e.Code)
		}
		codes = append(codes, e.Code)
	}
	return codes
}

func TestBadInputIsRefusedAndLeavesNothing(t *testing.T) {
	tr := startRegistry(t, ReadWrite)
	// A stored image the bad manifests can borrow a config from.
	base := content.Image(t, 2)
	if err := remote.Write(tr.ref(t, "good/app:base"), base); err != nil {
		t.Fatal(err)
	}
	rawBase, err := base.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	missingBlob := bytes.Replace(rawBase, []byte(mustLayerDigest(t, base)), []byte("sha256:"+strings.Repeat("ab", 32)), 1)
	big := append(append([]byte(`{"schemaVersion":2,"annotations":{"pad":"`), bytes.Repeat([]byte("x"), maxManifestSize)...), []byte(`"}}`)...)
	blob := []byte("some blob content")
	wrongDigest := "sha256:" + strings.Repeat("0", 64)
	const oci = "application/vnd.oci.image.manifest.v1+json"

	cases := []struct {
		name, method, path, contentType string
		body                            []byte
		status                          int
		code                            string
		repo                            string // must not exist afterwards
	}{
		{"manifest naming missing blob", "PUT", "/v2/bad/missing/manifests/v1", string(types.DockerManifestSchema2), missingBlob, 400, "MANIFEST_BLOB_UNKNOWN", "bad/missing"},
		{"malformed digest in manifest reference", "PUT", "/v2/bad/digest/manifests/sha256:xyz", oci, rawBase, 400, "DIGEST_INVALID", "bad/digest"},
		{"malformed digest in blob fetch", "GET", "/v2/good/app/blobs/sha256:123", "", nil, 400, "DIGEST_INVALID", ""},
		{"malformed digest in upload", "POST", "/v2/bad/upload/blobs/uploads/?digest=sha256:zz", "application/octet-stream", blob, 400, "DIGEST_INVALID", "bad/upload"},
		{"manifest over 4 MiB", "PUT", "/v2/bad/big/manifests/v1", oci, big, 413, "SIZE_INVALID", "bad/big"},
		{"uppercase name", "PUT", "/v2/Bad/Upper/manifests/v1", oci, rawBase, 400, "NAME_INVALID", ""},
		{"dot-dot name", "PUT", "/v2/bad/../etc/manifests/v1", oci, rawBase, 400, "NAME_INVALID", ""},
		{"empty path component", "PUT", "/v2/bad//empty/manifests/v1", oci, rawBase, 400, "NAME_INVALID", ""},
		{"blob digest does not match content", "POST", "/v2/bad/blobdigest/blobs/uploads/?digest=" + wrongDigest, "application/octet-stream", blob, 400, "DIGEST_INVALID", ""},
		{"manifest digest does not match content", "PUT", "/v2/bad/mdigest/manifests/" + wrongDigest, string(types.DockerManifestSchema2), rawBase, 400, "DIGEST_INVALID", "bad/mdigest"},
	}
	before := len(tr.events(t))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, tr.URL+c.path, bytes.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = strings.TrimPrefix(tr.URL, "http:") + c.path // keep ".." and "//" as sent
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != c.status {
				data, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, data, c.status)
			}
			if codes := ociErrors(t, resp); !slices.Contains(codes, c.code) {
				t.Errorf("codes %v, want %s", codes, c.code)
			}
			if c.repo != "" {
				resp := tr.do(t, "GET", "/v2/"+c.repo+"/tags/list", "", nil)
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("repository %s exists after a refused request: %d", c.repo, resp.StatusCode)
				}
			}
		})
	}
	if after := len(tr.events(t)); after != before {
		t.Errorf("refused requests left %d events", after-before)
	}
	resp := tr.do(t, "GET", "/v2/good/app/blobs/"+wrongDigest, "", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("blob with a wrong digest was stored: GET says %d", resp.StatusCode)
	}
}

func mustLayerDigest(t testing.TB, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return content.Digest(t, layers[0])
}

func TestReadOnlyRefusesWritesAndServesReads(t *testing.T) {
	dir := t.TempDir()
	rw := startRegistryIn(t, dir, ReadWrite)
	img := content.Image(t, 2)
	if err := remote.Write(rw.ref(t, "app:1"), img); err != nil {
		t.Fatal(err)
	}
	rw.stop()
	ro := startRegistryIn(t, dir, ReadOnly)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v2/app/blobs/uploads/"},
		{"PUT", "/v2/app/manifests/2"},
		{"DELETE", "/v2/app/manifests/1"},
		{"DELETE", "/v2/app/manifests/" + content.Digest(t, img)},
		{"DELETE", "/v2/app/blobs/" + mustLayerDigest(t, img)},
		{"PATCH", "/v2/app/blobs/uploads/some-id"},
	} {
		resp := ro.do(t, c.method, c.path, "", []byte("{}"))
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s on a read-only node: %d, want 405", c.method, c.path, resp.StatusCode)
			continue
		}
		data, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(data), `"UNSUPPORTED"`) || !strings.Contains(string(data), "read-only") {
			t.Errorf("%s %s: body %s, want UNSUPPORTED saying read-only", c.method, c.path, data)
		}
	}
	got, err := remote.Image(ro.ref(t, "app:1"))
	if err != nil {
		t.Fatalf("pull from read-only node: %v", err)
	}
	if content.Digest(t, got) != content.Digest(t, img) {
		t.Errorf("pulled %s, want %s", content.Digest(t, got), content.Digest(t, img))
	}
	if err := ro.DeleteRepository(context.Background(), "app"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("repository delete on a read-only node: %v, want ErrReadOnly", err)
	}
	if n := len(ro.events(t)); n != 1 {
		t.Errorf("read-only node has %d events, want only the one push made before", n)
	}
}

func TestReferrersAPIAndSubjectHeader(t *testing.T) {
	checkReferrersAPI(t, func(dir string) *testRegistry { return startRegistryIn(t, dir, ReadWrite) })
}

// checkReferrersAPI pushes two artifacts with a subject and lists them, filtered
// and not, through the API and a client; the index outlives a restart (start
// brings the registry up again on the same storage).
func checkReferrersAPI(t *testing.T, start func(dir string) *testRegistry) {
	dir := t.TempDir()
	tr := start(dir)
	img := content.Image(t, 2)
	subjectRef := tr.ref(t, "app:1")
	if err := remote.Write(subjectRef, img); err != nil {
		t.Fatal(err)
	}
	subject := content.Digest(t, img)
	desc, err := remote.Head(subjectRef)
	if err != nil {
		t.Fatal(err)
	}
	sbom := content.Artifact(t, "application/spdx+json", desc)
	sig := content.Artifact(t, "application/vnd.dev.cosign.artifact.sig.v1+json", desc)
	for _, a := range []v1.Image{sbom, sig} {
		pushBlobs(t, tr.ref(t, "app").Context(), a)
		raw, _ := a.RawManifest()
		resp := tr.do(t, "PUT", "/v2/app/manifests/"+content.Digest(t, a), string(types.OCIManifestSchema1), raw)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("push artifact: %d", resp.StatusCode)
		}
		if got := resp.Header.Get("OCI-Subject"); got != subject {
			t.Errorf("OCI-Subject = %q, want %s", got, subject)
		}
	}
	listReferrers := func(tr *testRegistry, query string) (v1.IndexManifest, http.Header) {
		resp := tr.do(t, "GET", "/v2/app/referrers/"+subject+query, "", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != string(types.OCIImageIndex) {
			t.Fatalf("referrers: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var idx v1.IndexManifest
		if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
			t.Fatal(err)
		}
		return idx, resp.Header
	}
	idx, _ := listReferrers(tr, "")
	if len(idx.Manifests) != 2 {
		t.Fatalf("referrers: %d, want 2", len(idx.Manifests))
	}
	idx, hdr := listReferrers(tr, "?artifactType="+url.QueryEscape("application/spdx+json"))
	if len(idx.Manifests) != 1 || idx.Manifests[0].ArtifactType != "application/spdx+json" || idx.Manifests[0].Digest.String() != content.Digest(t, sbom) {
		t.Errorf("filtered referrers = %+v, want only the sbom", idx.Manifests)
	}
	if hdr.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied = %q", hdr.Get("OCI-Filters-Applied"))
	}
	// go-containerregistry finds them through the API.
	viaClient, err := remote.Referrers(tr.ref(t, "app@"+subject).Context().Digest(subject))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := viaClient.IndexManifest(); len(m.Manifests) != 2 {
		t.Errorf("remote.Referrers found %d, want 2", len(m.Manifests))
	}
	if err := remote.Delete(tr.ref(t, "app@"+content.Digest(t, sig))); err != nil {
		t.Fatal(err)
	}
	// The index is durable: a restarted node answers the same.
	tr.stop()
	tr = start(dir)
	idx, _ = listReferrers(tr, "")
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != content.Digest(t, sbom) {
		t.Errorf("after delete and restart: %+v, want only the sbom", idx.Manifests)
	}
	if evs := tr.events(t); evs[1].Subject != subject {
		t.Errorf("artifact push event subject = %q, want %s", evs[1].Subject, subject)
	}
}

// pushBlobs uploads an image's layers and config, not its manifest.
func pushBlobs(t testing.TB, repo name.Repository, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := partial.ConfigLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range append(layers, cfg) {
		if err := remote.WriteLayer(repo, l); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSHA512ManifestRoundTrip(t *testing.T) {
	checkSHA512Manifest(t, startRegistry(t, ReadWrite))
}

// checkSHA512Manifest pushes, reads and deletes a manifest by its sha512 digest.
func checkSHA512Manifest(t *testing.T, tr *testRegistry) {
	img := content.Image(t, 2)
	if err := remote.Write(tr.ref(t, "app:base"), img); err != nil { // blobs and config
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	sum := sha512.Sum512(raw)
	d512 := "sha512:" + hex.EncodeToString(sum[:])
	mt := content.MediaType(t, img)

	resp := tr.do(t, "PUT", "/v2/app/manifests/"+d512, mt, raw)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d512 {
		t.Fatalf("PUT by sha512: %d digest %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	resp = tr.do(t, "GET", "/v2/app/manifests/"+d512, "", nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, raw) || resp.Header.Get("Docker-Content-Digest") != d512 {
		t.Fatalf("GET by sha512: %d, same bytes %v, digest %q", resp.StatusCode, bytes.Equal(got, raw), resp.Header.Get("Docker-Content-Digest"))
	}
	mismatch := tr.do(t, "PUT", "/v2/app/manifests/sha512:"+strings.Repeat("0", 128), mt, raw)
	if mismatch.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT with a wrong sha512: %d, want 400", mismatch.StatusCode)
	}
	if resp := tr.do(t, "DELETE", "/v2/app/manifests/"+d512, "", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE by sha512: %d", resp.StatusCode)
	}
	if resp := tr.do(t, "GET", "/v2/app/manifests/"+d512, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET after DELETE by sha512: %d, want 404", resp.StatusCode)
	}
}

func TestRouteParsing(t *testing.T) {
	for _, c := range []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: routeBase}},
		{"/v2/_catalog", route{kind: routeCatalog}},
		{"/v2/a/b/manifests/v1", route{routeManifest, "a/b", "v1"}},
		{"/v2/a/blobs/manifests/v1", route{routeManifest, "a/blobs", "v1"}},
		{"/v2/a/blobs/uploads/", route{routeUpload, "a", ""}},
		{"/v2/a/blobs/uploads/123", route{routeUpload, "a", "123"}},
		{"/v2/a/blobs/sha256:ab", route{routeBlob, "a", "sha256:ab"}},
		{"/v2/a/tags/list", route{routeTags, "a", ""}},
		{"/v2/a/referrers/sha256:ab", route{routeReferrers, "a", "sha256:ab"}},
		{"/v2/a", route{kind: routeOther}},
		{"/metrics", route{kind: routeOther}},
	} {
		if got := parseRoute(c.path); got != c.want {
			t.Errorf("parseRoute(%q) = %+v, want %+v", c.path, got, c.want)
		}
	}
	for name, ok := range map[string]bool{"a": true, "a/b-c/d.e": true, "a__b": true, "A": false, "a/../b": false, "a//b": false, "": false, "-a": false, strings.Repeat("a", 256): false} {
		if validName(name) != ok {
			t.Errorf("validName(%q) = %v, want %v", name, !ok, ok)
		}
	}
}

func TestDeleteRepositoryKeepsNestedOnesAndRecordsOneEvent(t *testing.T) {
	tr := startRegistry(t, ReadWrite)
	for _, r := range []string{"team/app:1", "team/app:2", "team/app/sub:1"} {
		if err := remote.Write(tr.ref(t, r), content.Image(t, 2)); err != nil {
			t.Fatal(err)
		}
	}
	before := len(tr.events(t))
	srv := httptest.NewServer(tr.RepositoryHandler())
	defer srv.Close()
	del := func(name string) int {
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/outpost/v1/repositories/"+name, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del("team/app"); code != http.StatusAccepted {
		t.Fatalf("delete repository: %d", code)
	}
	if code := del("team/app"); code != http.StatusNotFound {
		t.Errorf("delete it again: %d, want 404", code)
	}
	if code := del("Team/App"); code != http.StatusBadRequest {
		t.Errorf("delete an invalid name: %d, want 400", code)
	}
	if _, err := remote.Head(tr.ref(t, "team/app:1")); err == nil {
		t.Error("team/app:1 still resolves")
	}
	if _, err := remote.Head(tr.ref(t, "team/app/sub:1")); err != nil {
		t.Errorf("nested repository team/app/sub went too: %v", err)
	}
	evs := tr.events(t)
	if len(evs) != before+1 || evs[len(evs)-1].Action != events.ActionRepositoryDelete || evs[len(evs)-1].Repository != "team/app" {
		t.Errorf("events after repository delete: %d new, last %v", len(evs)-before, evs[len(evs)-1])
	}
}
