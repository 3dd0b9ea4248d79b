package test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/outpost-edge/outpost/test/content"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/stream"
)

// pushMany pushes count fresh images as repo:0..count-1 at n, eight at a time, and
// returns the digests by tag.
func pushMany(t *testing.T, n *Node, repo string, count int) map[string]string {
	t.Helper()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  = map[string]string{}
		sema = make(chan struct{}, 8)
	)
	for i := range count {
		wg.Add(1)
		sema <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sema }()
			img := content.Image(t, 1)
			tag := fmt.Sprint(i)
			r, _ := name.ParseReference(n.Host+"/"+repo+":"+tag, name.Insecure)
			if err := remote.Write(r, img, Auth); err != nil {
				t.Errorf("push %s:%s: %v", repo, tag, err)
				return
			}
			mu.Lock()
			out[tag] = content.Digest(t, img)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// tagsAt lists repo's tags at n with their digests.
func tagsAt(n *Node, repo string) (map[string]string, error) {
	r, err := name.NewRepository(n.Host+"/"+repo, name.Insecure)
	if err != nil {
		return nil, err
	}
	tags, err := remote.List(r, Auth)
	if err != nil {
		if strings.Contains(err.Error(), "NAME_UNKNOWN") {
			return map[string]string{}, nil
		}
		return nil, err
	}
	out := map[string]string{}
	for _, tag := range tags {
		d, err := remote.Head(r.Tag(tag), Auth)
		if err != nil {
			return nil, err
		}
		out[tag] = d.Digest.String()
	}
	return out, nil
}

// eventuallyConverged waits until repo holds exactly want (tag -> digest) at every node.
func eventuallyConverged(t *testing.T, repo string, want map[string]string, nodes ...*Node) {
	t.Helper()
	Eventually(t, 2*replicationTimeout, func() error {
		for _, n := range nodes {
			got, err := tagsAt(n, repo)
			if err != nil {
				return fmt.Errorf("%s at %s: %v", repo, n.opts.Name, err)
			}
			var wrong []string
			for tag, d := range want {
				if got[tag] != d {
					wrong = append(wrong, tag)
				}
			}
			for tag := range got {
				if _, ok := want[tag]; !ok {
					wrong = append(wrong, tag+" (extra)")
				}
			}
			if len(wrong) > 0 {
				slices.Sort(wrong)
				return fmt.Errorf("%s at %s: %d of %d tags differ, e.g. %v", repo, n.opts.Name, len(wrong), len(want), wrong[:min(5, len(wrong))])
			}
		}
		return nil
	})
}

// verifyImages reads every image in full at n: go-containerregistry checks each
// blob's digest as it reads to the end.
func verifyImages(t *testing.T, n *Node, repo string, want map[string]string) {
	t.Helper()
	for tag, d := range want {
		img, err := remote.Image(mustRef(t, n, repo+":"+tag), Auth)
		if err != nil {
			t.Fatalf("%s:%s at %s: %v", repo, tag, n.opts.Name, err)
		}
		if got := content.Digest(t, img); got != d {
			t.Errorf("%s:%s at %s is %s, want %s", repo, tag, n.opts.Name, got, d)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
			if err != nil {
				t.Errorf("%s:%s at %s: a layer does not verify: %v", repo, tag, n.opts.Name, err)
			}
		}
	}
}

// Scenario 1: a hundred pushes at a ReadWrite leaf while its parent is down.
func TestFaultPushesAtALeafWhileItsParentIsDown(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	mid := StartChild(t, root, Child{Name: "midnode", Mode: "ReadWrite", Repositories: []string{"f/*"}})
	leaf := StartChild(t, root, Child{Name: "leafnode", Parent: "midnode", Mode: "ReadWrite", Repositories: []string{"f/*"}})
	mid.Stop()
	want := pushMany(t, leaf, "f/leaf", 100)
	mid.Start()
	eventuallyConverged(t, "f/leaf", want, leaf, mid, root)
}

// Scenario 2: the middle node killed with SIGKILL while it drains a hundred images,
// then the leaf below it.
func TestFaultMiddleNodeKilledDuringADrain(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	mid := StartChild(t, root, Child{Name: "midnode", Mode: "ReadWrite", Repositories: []string{"f/*"}})
	leaf := StartChild(t, root, Child{Name: "leafnode", Parent: "midnode", Mode: "ReadOnly", Repositories: []string{"f/*"}})
	want := pushMany(t, root, "f/root", 100)
	Eventually(t, replicationTimeout, func() error {
		got, err := tagsAt(leaf, "f/root")
		if err != nil || len(got) == 0 {
			return fmt.Errorf("the drain has not reached the leaf yet (%v)", err)
		}
		return nil
	})
	mid.Kill()
	mid.Start()
	// And the leaf, killed while it drains in turn.
	leaf.Kill()
	leaf.Start()
	eventuallyConverged(t, "f/root", want, mid, leaf)
	verifyImages(t, leaf, "f/root", want)
}

// Scenario 4: a byte flipped on the link: the corrupt copy is rejected and retried,
// and what is stored verifies.
func TestFaultByteFlippedOnTheLink(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	leaf := StartChild(t, root, Child{Name: "leafnode", Mode: "ReadOnly", Repositories: []string{"f/*"}, ThroughProxy: true})
	// Deep in the first connection that carries a 1 MiB layer: inside its body.
	leaf.RegistryProxy.FlipOnce(600 << 10)
	img := content.Append(t, content.Image(t, 0), content.Layer(t, 1<<20, types.DockerLayer))
	d := push(t, root, "f/flip:1", img)
	eventuallyAt(t, "f/flip:1", d, leaf)
	if leaf.RegistryProxy.Flipped() != 1 {
		t.Fatalf("the proxy flipped %d bytes, want 1", leaf.RegistryProxy.Flipped())
	}
	verifyImages(t, leaf, "f/flip", map[string]string{"1": d})
	if out := leaf.Output(); !strings.Contains(out, "checksum") {
		t.Errorf("the leaf never said it rejected a corrupt copy:\n%s", out)
	}
}

// Scenario 3: the link cut five times during a 1 GiB layer: the copy completes and
// resumes from what the child confirmed, re-sending at most 10% of the layer.
func TestFaultLinkCutFiveTimesDuringAGiBLayer(t *testing.T) {
	const size = 1 << 30
	root := StartNode(t, NodeOptions{})
	leaf := StartChild(t, root, Child{Name: "leafnode", Mode: "ReadOnly", Repositories: []string{"f/*"}, ThroughProxy: true})
	layer := stream.NewLayer(io.NopCloser(io.LimitReader(rand.NewChaCha8([32]byte{1}), size)))
	img := content.Append(t, content.Image(t, 0), layer)
	proxy := leaf.RegistryProxy
	start := proxy.ToChild() // before the push: the copy starts as soon as it lands
	r := mustRef(t, root, "f/big:1")
	if err := remote.Write(r, img, Auth); err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r, Auth)
	if err != nil {
		t.Fatal(err)
	}
	var cuts atomic.Int64
	done := make(chan struct{})
	defer close(done)
	go func() { // cut at 150, 300, ... 750 MiB of the copy
		for cut := int64(1); cut <= 5; {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if proxy.ToChild()-start > cut*150<<20 {
				proxy.Cut()
				cuts.Add(1)
				cut++
			}
		}
	}()
	Eventually(t, 5*time.Minute, func() error {
		got, err := resolve(leaf, "f/big:1")
		if err != nil || got != desc.Digest.String() {
			return fmt.Errorf("f/big:1 at the leaf: %q (%v), %d MiB sent, %d cuts", got, err, (proxy.ToChild()-start)>>20, cuts.Load())
		}
		return nil
	})
	sent := proxy.ToChild() - start
	resent := sent - size
	t.Logf("1 GiB layer: %d MiB toward the child, %d KiB re-sent (%.2f%%), link cut %d times",
		sent>>20, resent>>10, 100*float64(resent)/size, cuts.Load())
	if cuts.Load() < 5 {
		t.Errorf("the link was cut only %d times", cuts.Load())
	}
	if resent > size/10 {
		t.Errorf("re-sent %d MiB, more than 10%% of the layer", resent>>20)
	}
	verifyImages(t, leaf, "f/big", map[string]string{"1": desc.Digest.String()})
}
