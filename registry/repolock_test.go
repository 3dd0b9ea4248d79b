package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/outpost-edge/outpost/test/content"
)

// serverErrors records every 5xx answer a client saw.
type serverErrors struct {
	mu   sync.Mutex
	seen []string
}

func (s *serverErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && resp.StatusCode >= 500 {
		s.mu.Lock()
		s.seen = append(s.seen, fmt.Sprintf("%s %s: %s", req.Method, req.URL.Path, resp.Status))
		s.mu.Unlock()
	}
	return resp, err
}

// raceRound is what one round pushes: images by tag (some with a referrer pushed by
// digest), and one image whose blobs are written in process as replication does.
type raceRound struct {
	images    []v1.Image
	referrers []v1.Image // referrers[i] refers to images[i]; nil for none
	local     v1.Image   // blobs by WriteBlob, manifest by the API
}

// TestRepositoryDeleteRacesPushes races repository deletes against pushes to the same
// repository (several clients, and blobs written in process): no client sees a 5xx,
// every tag left resolves to a manifest whose every blob reads back whole, and the
// referrers index names exactly the referrers stored.
func TestRepositoryDeleteRacesPushes(t *testing.T) {
	const (
		repo    = "race/app"
		rounds  = 25
		pushers = 4
	)
	ctx := context.Background()
	tr := startRegistry(t, ReadWrite)
	errs := &serverErrors{}
	opts := []remote.Option{remote.WithTransport(errs), remote.WithRetryBackoff(remote.Backoff{Steps: 1})}
	repoRef, err := name.NewRepository(tr.Host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	var kept, deleted, refused atomic.Int64
	var whyMu sync.Mutex
	why := map[string]int{} // refusals by the OCI code
	refuse := func(err error) {
		refused.Add(1)
		code := "not an OCI error: " + err.Error()
		var te *transport.Error
		if errors.As(err, &te) && len(te.Errors) > 0 {
			code = string(te.Errors[0].Code)
		}
		whyMu.Lock()
		why[code]++
		whyMu.Unlock()
	}
	for round := range rounds {
		rr := raceRound{local: content.Image(t, 2)}
		for i := range pushers {
			img := content.Image(t, 2)
			rr.images = append(rr.images, img)
			var ref v1.Image
			if i%2 == 0 {
				m, err := img.Manifest()
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := img.RawManifest()
				ref = content.Artifact(t, "application/spdx+json",
					&v1.Descriptor{MediaType: m.MediaType, Size: int64(len(raw)), Digest: mustHash(t, img)})
			}
			rr.referrers = append(rr.referrers, ref)
		}
		localBlobs := blobsOf(t, rr.local)
		refDigests := make([]string, len(rr.referrers))
		for i, a := range rr.referrers {
			if a != nil {
				refDigests[i] = mustHash(t, a).String()
			}
		}

		stop := make(chan struct{})
		var deleter sync.WaitGroup
		deleter.Add(1)
		go func() {
			defer deleter.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(rand.IntN(4000)) * time.Microsecond):
				}
				err := tr.DeleteRepository(ctx, repo)
				switch {
				case err == nil:
					deleted.Add(1)
				case errors.Is(err, ErrRepositoryUnknown):
				default:
					t.Errorf("round %d: delete repository: %v", round, err)
				}
			}
		}()
		var wg sync.WaitGroup
		for i, img := range rr.images {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := remote.Write(repoRef.Tag(fmt.Sprintf("r%d-p%d", round, i)), img, opts...); err != nil {
					refuse(err)
					return
				}
				kept.Add(1)
				if a := rr.referrers[i]; a != nil {
					if err := remote.Write(repoRef.Digest(refDigests[i]), a, opts...); err != nil {
						refuse(err)
					}
				}
			}()
		}
		wg.Add(1)
		go func() { // as replication does: blobs in process, the manifest through the API
			defer wg.Done()
			for d, b := range localBlobs {
				if err := tr.WriteBlob(ctx, repo, d, int64(len(b)), (&source{data: b}).open); err != nil {
					t.Errorf("round %d: write blob %s: %v", round, d, err)
					return
				}
			}
			if err := remote.Put(repoRef.Tag(fmt.Sprintf("r%d-local", round)), rr.local, opts...); err != nil {
				refuse(err)
			}
		}()
		wg.Wait()
		close(stop)
		deleter.Wait()
		checkRepositoryWhole(t, tr, repoRef, opts)
	}
	errs.mu.Lock()
	if len(errs.seen) > 0 {
		t.Errorf("%d server errors, the first: %s", len(errs.seen), strings.Join(errs.seen[:min(5, len(errs.seen))], "; "))
	}
	errs.mu.Unlock()
	t.Logf("%d rounds: %d repository deletes, %d pushes kept, %d refused %v", rounds, deleted.Load(), kept.Load(), refused.Load(), why)
	// A push the delete overtook finds its blobs or its upload gone: it is refused
	// for that, never for anything else.
	for code := range why {
		switch code {
		case "MANIFEST_BLOB_UNKNOWN", "BLOB_UPLOAD_UNKNOWN", "BLOB_UNKNOWN":
		default:
			t.Errorf("%d pushes refused with %s, want only missing blobs or uploads", why[code], code)
		}
	}
	if deleted.Load() < rounds/2 || kept.Load() == 0 {
		t.Errorf("the race was not run: %d deletes, %d pushes kept", deleted.Load(), kept.Load())
	}
}

// checkRepositoryWhole checks that every tag of repo resolves to a manifest whose
// blobs all read back, and that the referrers index and the stored manifests agree.
func checkRepositoryWhole(t *testing.T, tr *testRegistry, repo name.Repository, opts []remote.Option) {
	t.Helper()
	ctx := context.Background()
	tags, err := remote.List(repo, opts...)
	if err != nil && !strings.Contains(err.Error(), "NAME_UNKNOWN") {
		t.Fatalf("list tags: %v", err)
	}
	for _, tag := range tags {
		img, err := remote.Image(repo.Tag(tag), opts...)
		if err != nil {
			t.Errorf("tag %s does not resolve: %v", tag, err)
			continue
		}
		if _, err := img.RawConfigFile(); err != nil {
			t.Errorf("tag %s: config: %v", tag, err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Errorf("tag %s: layers: %v", tag, err)
			continue
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err == nil {
				_, err = io.Copy(io.Discard, rc) // checked against its digest at EOF
				rc.Close()
			}
			if err != nil {
				t.Errorf("tag %s: layer: %v", tag, err)
			}
		}
	}
	// Every index entry names a stored manifest, and every stored referrer is indexed.
	name := repo.RepositoryStr()
	revisions := map[string]string{} // digest -> its link's content
	if revs, err := tr.driver.List(ctx, path.Join(repositoriesRoot, name, "_manifests/revisions/sha256")); err == nil {
		for _, r := range revs {
			// distribution deletes a manifest by its link and leaves the directory
			if b, err := tr.driver.GetContent(ctx, path.Join(r, "link")); err == nil {
				revisions["sha256:"+path.Base(r)] = string(b)
			}
		}
	}
	indexed := map[string]bool{}
	if entries, err := tr.driver.List(ctx, path.Join(referrersRoot, name, "_referrers/sha256")); err == nil {
		for _, e := range entries {
			d := "sha256:" + path.Base(e)
			indexed[d] = true
			if _, ok := revisions[d]; !ok {
				t.Errorf("the referrers index names %s, which %s does not store", d, name)
			}
		}
	}
	for d, b := range revisions {
		dg, err := digest.Parse(b)
		if err != nil {
			t.Errorf("manifest %s in %s: link %q: %v", d, name, b, err)
			continue
		}
		raw, err := tr.driver.GetContent(ctx, blobDataPath(dg))
		if err != nil {
			t.Errorf("manifest %s in %s: %v", d, name, err)
			continue
		}
		if subjectOf(raw) != "" && !indexed[d] {
			t.Errorf("referrer %s is stored in %s but not in the referrers index", d, name)
		}
	}
}

func mustHash(t testing.TB, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// blobsOf returns an image's layers and config by digest.
func blobsOf(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, b := blobOf(t, l)
		out[d] = b
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out[cd.String()] = cfg
	return out
}

// TestRepositoryDeleteWaitIsBounded: a delete waits for a write under way no longer
// than its bound and says why it gave up; writes that arrived behind it go on then;
// once the write ends, the delete goes through.
func TestRepositoryDeleteWaitIsBounded(t *testing.T) {
	ctx := context.Background()
	tr := startRegistryIn(t, t.TempDir(), ReadWrite, func(c *Config) { c.RepositoryDeleteWait = 200 * time.Millisecond })
	if err := remote.Write(tr.ref(t, "team/app:1"), content.Image(t, 1)); err != nil {
		t.Fatal(err)
	}
	release, err := tr.repos.write(ctx, "team/app") // a long upload, say
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tr.RepositoryHandler())
	defer srv.Close()
	deleted := make(chan *http.Response, 1)
	start := time.Now()
	go func() {
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/outpost/v1/repositories/team/app", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		deleted <- resp
	}()
	// A push arriving while the delete waits waits behind it, then goes on.
	time.Sleep(50 * time.Millisecond)
	if err := remote.Write(tr.ref(t, "team/app:2"), content.Image(t, 1)); err != nil {
		t.Errorf("push behind a delete that gave up: %v", err)
	}
	resp := <-deleted
	if resp == nil {
		t.FailNow()
	}
	msg := ociMessage(resp)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(msg, "writes to the repository are still under way after 200ms") ||
		resp.Header.Get("Retry-After") == "" {
		t.Errorf("delete while a write is under way: %d %q (Retry-After %q), want 409 saying writes are under way",
			resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	if waited := time.Since(start); waited < 200*time.Millisecond || waited > 5*time.Second {
		t.Errorf("the delete answered after %s, want its bound of 200ms", waited)
	}
	for _, tag := range []string{"team/app:1", "team/app:2"} {
		if _, err := remote.Head(tr.ref(t, tag)); err != nil {
			t.Errorf("%s after a delete that gave up: %v", tag, err)
		}
	}
	release()
	if err := tr.DeleteRepository(ctx, "team/app"); err != nil {
		t.Fatalf("delete once the write ended: %v", err)
	}
	if _, err := remote.Head(tr.ref(t, "team/app:1")); err == nil {
		t.Error("team/app:1 resolves after the delete")
	}
	if len(tr.repos.m) != 0 {
		t.Errorf("%d repository locks left over, want none", len(tr.repos.m))
	}
}

// TestManifestDeletesRaceTagPuts races, at one node, puts of tags onto a manifest
// against deletes of those tags and of the manifest by digest: every tag left must
// resolve, and no client sees a 5xx.
func TestManifestDeletesRaceTagPuts(t *testing.T) {
	const repo, rounds = "race/tags", 40
	tr := startRegistry(t, ReadWrite)
	errs := &serverErrors{}
	opts := []remote.Option{remote.WithTransport(errs), remote.WithRetryBackoff(remote.Backoff{Steps: 1})}
	repoRef, err := name.NewRepository(tr.Host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := content.Image(t, 1)
	if err := remote.Write(repoRef.Tag("base"), img, opts...); err != nil {
		t.Fatal(err)
	}
	dgst := repoRef.Digest(mustHash(t, img).String())
	var puts, deletes atomic.Int64
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Add(3)
			tag := repoRef.Tag(fmt.Sprintf("t%d", i))
			go func() {
				defer wg.Done()
				if remote.Put(tag, img, opts...) == nil {
					puts.Add(1)
				}
			}()
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
				if remote.Delete(tag, opts...) == nil {
					deletes.Add(1)
				}
			}()
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
				if remote.Delete(dgst, opts...) == nil {
					deletes.Add(1)
				}
			}()
		}
		wg.Wait()
		checkRepositoryWhole(t, tr, repoRef, opts)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
	errs.mu.Lock()
	if len(errs.seen) > 0 {
		t.Errorf("%d server errors, the first: %s", len(errs.seen), strings.Join(errs.seen[:min(5, len(errs.seen))], "; "))
	}
	errs.mu.Unlock()
	t.Logf("%d rounds: %d tag puts, %d deletes", rounds, puts.Load(), deletes.Load())
	if puts.Load() == 0 || deletes.Load() == 0 {
		t.Errorf("the race was not run: %d tag puts, %d deletes", puts.Load(), deletes.Load())
	}
}
