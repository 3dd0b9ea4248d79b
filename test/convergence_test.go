package test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/test/content"
)

// convergeTimeout bounds how long a quiet tree may take to agree on a tag: the
// root's order decides within seconds, without an operator.
const convergeTimeout = 20 * time.Second

// TestConvergeSiblingRace pushes the same tags with different content at two
// ReadWrite siblings at the same moment, round after round. Whatever the root
// applied last must end up at both sites, and each write that lost must be
// reported at the site that made it.
func TestConvergeSiblingRace(t *testing.T) {
	const rounds, tags = 6, 8
	root := StartNode(t, NodeOptions{})
	a := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"race/*"}})
	b := StartChild(t, root, Child{Name: "siteb", Mode: "ReadWrite", Repositories: []string{"race/*"}})
	sites := []*Node{a, b}
	for round := range rounds {
		imgs := make([][]v1.Image, len(sites))
		for i := range sites {
			for range tags {
				imgs[i] = append(imgs[i], content.Image(t, 1))
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range sites {
			for k := range tags {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					ref := mustRef(t, s, fmt.Sprintf("race/app:t%d", k))
					if err := remote.Write(ref, imgs[i][k], Auth); err != nil {
						t.Errorf("round %d: push %s at %s: %v", round, ref, s.opts.Name, err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for k := range tags {
			ref := fmt.Sprintf("race/app:t%d", k)
			pushed := map[string]bool{}
			for i := range sites {
				pushed[content.Digest(t, imgs[i][k])] = true
			}
			eventuallySame(t, ref, pushed, root, a, b)
		}
		t.Logf("round %d: %d tags pushed at both sites agree at every node", round, tags)
	}
}

// eventuallySame waits until ref has one digest at every node, the root's first,
// and that digest is one of allowed (when given).
func eventuallySame(t *testing.T, ref string, allowed map[string]bool, root *Node, others ...*Node) {
	t.Helper()
	Eventually(t, convergeTimeout, func() error {
		want, err := resolve(root, ref)
		if err != nil {
			return fmt.Errorf("%s at root: %v", ref, err)
		}
		if allowed != nil && !allowed[want] {
			return fmt.Errorf("%s at root is %q, none of the pushed digests", ref, want)
		}
		var wrong []string
		for _, n := range others {
			got, err := resolve(n, ref)
			if err != nil {
				return fmt.Errorf("%s at %s: %v", ref, n.opts.Name, err)
			}
			if got != want {
				wrong = append(wrong, fmt.Sprintf("%s has %s", n.opts.Name, short(got)))
			}
		}
		if len(wrong) > 0 {
			return fmt.Errorf("%s: root has %s, %s", ref, short(want), strings.Join(wrong, ", "))
		}
		return nil
	})
}

// short is a digest's first hex characters, for messages.
func short(d string) string {
	if d == "" {
		return "nothing"
	}
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}
