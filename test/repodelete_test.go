package test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/test/content"
)

// TestReferrerSentUpAfterTheParentDeletedTheRepository: a site sends a referrer up,
// the repository is deleted at the root (and so at the site), and the site pushes a
// new image with a new referrer of the same type, whose config blob is the first's.
// The new referrer must reach the root: the site's upstream writer may not go on
// believing the root still holds that blob. (It did: go-containerregistry's Pusher
// remembers each blob it put for its whole life, and the referrer was refused with
// MANIFEST_BLOB_UNKNOWN until the site restarted; found by the convergence checker.)
func TestReferrerSentUpAfterTheParentDeletedTheRepository(t *testing.T) {
	const repo = "del/app"
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "siteb", Mode: "ReadWrite", Repositories: []string{"del/*"}})

	pushWithReferrer := func(tag string) (img, art v1.Image) {
		t.Helper()
		img = content.Image(t, 1)
		if err := remote.Write(mustRef(t, site, repo+":"+tag), img, Auth); err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(mustRef(t, site, repo+":"+tag), Auth)
		if err != nil {
			t.Fatal(err)
		}
		art = content.Artifact(t, "application/vnd.outpost.test+json", desc)
		if err := remote.Write(mustRef(t, site, repo+"@"+content.Digest(t, art)), art, Auth); err != nil {
			t.Fatal(err)
		}
		return img, art
	}
	referrerAtRoot := func(img, art v1.Image) {
		t.Helper()
		Eventually(t, replicationTimeout, func() error {
			idx, err := remote.Referrers(mustDigestRef(t, root, repo+"@"+content.Digest(t, img)), Auth)
			if err != nil {
				return err
			}
			m, err := idx.IndexManifest()
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(m.Manifests, func(d v1.Descriptor) bool { return d.Digest.String() == content.Digest(t, art) }) {
				return fmt.Errorf("the root lists %d referrers of %s, not %s", len(m.Manifests), content.Digest(t, img), content.Digest(t, art))
			}
			return nil
		})
	}

	img1, art1 := pushWithReferrer("1")
	referrerAtRoot(img1, art1)

	deleteRepository(t, root, repo)
	Eventually(t, replicationTimeout, func() error {
		if d, err := resolve(site, repo+":1"); err != nil || d != "" {
			return fmt.Errorf("%s:1 at the site after the root deleted the repository: %q %v", repo, d, err)
		}
		return nil
	})

	img2, art2 := pushWithReferrer("2")
	c1, _ := art1.ConfigName()
	c2, _ := art2.ConfigName()
	if c1 != c2 {
		t.Fatalf("the two referrers have configs %s and %s: the test needs them shared", c1, c2)
	}
	referrerAtRoot(img2, art2)
}

// TestRepositoryDeletedAndPushedAgainAtASiteConverges: a site deletes a repository
// while its link is down and pushes one of its images again; the root, applying the
// delete, finds the repository pushed to again and makes each tag what it is at the
// site. The tag's referrers too: the one the delete took at the site goes at the
// root. (Before, the root kept it and the two never agreed; found by the checker.)
func TestRepositoryDeletedAndPushedAgainAtASiteConverges(t *testing.T) {
	const repo = "del/app"
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "siteb", Mode: "ReadWrite", Repositories: []string{"del/*"}, ThroughProxy: true})
	img := content.Image(t, 1)
	if err := remote.Write(mustRef(t, site, repo+":1"), img, Auth); err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(mustRef(t, site, repo+":1"), Auth)
	if err != nil {
		t.Fatal(err)
	}
	art := content.Artifact(t, "application/vnd.outpost.test+json", desc)
	if err := remote.Write(mustRef(t, site, repo+"@"+content.Digest(t, art)), art, Auth); err != nil {
		t.Fatal(err)
	}
	referrers := func(n *Node) (string, error) {
		idx, err := remote.Referrers(mustDigestRef(t, n, repo+"@"+content.Digest(t, img)), Auth)
		if err != nil {
			return "", err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return "", err
		}
		var ds []string
		for _, d := range m.Manifests {
			ds = append(ds, d.Digest.String())
		}
		slices.Sort(ds)
		return fmt.Sprint(ds), nil
	}
	Eventually(t, replicationTimeout, func() error {
		if got, err := referrers(root); err != nil || got != fmt.Sprint([]string{content.Digest(t, art)}) {
			return fmt.Errorf("referrers at the root: %s %v", got, err)
		}
		return nil
	})

	site.RegistryProxy.SetDown(true)
	site.GatewayProxy.SetDown(true)
	deleteRepository(t, site, repo)
	if err := remote.Write(mustRef(t, site, repo+":1"), img, Auth); err != nil {
		t.Fatal(err)
	}
	site.RegistryProxy.SetDown(false)
	site.GatewayProxy.SetDown(false)

	Eventually(t, replicationTimeout, func() error {
		r, err := referrers(root)
		if err != nil {
			return err
		}
		s, err := referrers(site)
		if err != nil {
			return err
		}
		if r != "[]" || s != "[]" {
			return fmt.Errorf("referrers of %s: the root has %s, the site %s; want none at either", content.Digest(t, img), r, s)
		}
		return nil
	})
}

// deleteRepository deletes repo at n with n's registry credentials (Authorize), as a
// client with delete rights would.
func deleteRepository(t *testing.T, n *Node, repo string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, n.URL+"/outpost/v1/repositories/"+repo, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(Authorize(req))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete %s at %s: %s", repo, n.opts.Name, resp.Status)
	}
}
