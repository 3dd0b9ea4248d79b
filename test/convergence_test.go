package test

import (
	"encoding/json"
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
//
// A round starts once the last one's writes are older than the sites' conflict
// window: a write replaced within it counts as overwritten (see pipeline.Ledger),
// so a next round's write reaching a site before the site's own would otherwise
// be taken for a conflict with the last round's winner.
func TestConvergeSiblingRace(t *testing.T) {
	const rounds, tags = 6, 8
	const conflictWindow = 8 * time.Second
	root := StartNode(t, NodeOptions{})
	window := []string{"--conflict-window", conflictWindow.String()}
	a := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"race/*"}, ServeArgs: window})
	b := StartChild(t, root, Child{Name: "siteb", Mode: "ReadWrite", Repositories: []string{"race/*"}, ServeArgs: window})
	sites := []*Node{a, b}
	lost := map[*Node]map[string]string{a: {}, b: {}} // "ref lost-digest" -> winning digest
	var agreed time.Time
	for round := range rounds {
		time.Sleep(time.Until(agreed.Add(conflictWindow)))
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
			won := eventuallySame(t, ref, pushed, root, a, b)
			for i, s := range sites {
				if d := content.Digest(t, imgs[i][k]); d != won {
					lost[s][ref+" "+d] = won
				}
			}
		}
		// Every write of the round was sent up, so seen by its site's ledger, by now.
		agreed = time.Now()
		t.Logf("round %d: %d tags pushed at both sites agree at every node", round, tags)
	}
	// Nothing ping-pongs: once the tree agrees, no node writes anything more.
	before := eventCounts(t, root, a, b)
	time.Sleep(3 * time.Second) // a window in which nothing may happen
	if after := eventCounts(t, root, a, b); after != before {
		t.Errorf("events published by root, sitea, siteb went on after the tree agreed: %v, then %v", before, after)
	}
	// Every write that lost is reported where it was made, once: a log line naming
	// the tag, both digests and the winner, the counter, and a status detail the root
	// shows. A write that won is never reported.
	for _, s := range sites {
		got := conflictsLogged(t, s)
		for k, won := range lost[s] {
			if g, ok := got[k]; !ok {
				t.Errorf("%s did not report its overwritten write %s", s.opts.Name, k)
			} else if g != won {
				t.Errorf("%s reported %s as replaced by %s, want %s", s.opts.Name, k, short(g), short(won))
			}
		}
		for k := range got {
			if _, ok := lost[s][k]; !ok {
				t.Errorf("%s reported %s as overwritten, but it won", s.opts.Name, k)
			}
		}
		want := fmt.Sprintf(`outpost_tag_conflicts_total{kind="replaced"} %d`, len(lost[s]))
		if m := scrape(t, s); !strings.Contains(m, want) {
			t.Errorf("%s /metrics lacks %q", s.opts.Name, want)
		}
		t.Logf("%s lost %d of %d writes, each reported", s.opts.Name, len(lost[s]), rounds*tags)
		if len(lost[s]) > 0 {
			eventuallyDetail(t, root, s.opts.Name, "TAG_CONFLICT", fmt.Sprintf("%d writes made here or below were overwritten", len(lost[s])))
		}
	}
	if len(lost[a])+len(lost[b]) != rounds*tags {
		t.Errorf("%d writes lost, want one per tag and round (%d)", len(lost[a])+len(lost[b]), rounds*tags)
	}
	if t.Failed() {
		logRepositoryEvents(t, []string{"race/app"}, root, a, b)
	}
}

// conflictLine is the log line a node writes for an overwritten write.
const conflictLine = "tag conflict: a write here was overwritten by the parent's order"

// conflictsLogged reads the conflicts n logged: "repo:tag lost-digest" -> winner.
func conflictsLogged(t *testing.T, n *Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(n.Output(), "\n") {
		var rec struct{ Msg, Ref, Lost, Won string }
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != conflictLine {
			continue
		}
		k := rec.Ref + " " + rec.Lost
		if _, dup := out[k]; dup {
			t.Errorf("%s reported %s twice", n.opts.Name, k)
		}
		out[k] = rec.Won
	}
	return out
}

// eventuallyDetail waits until the root shows a status detail of node with code
// and a message containing msg.
func eventuallyDetail(t *testing.T, root *Node, node, code, msg string) {
	t.Helper()
	Eventually(t, replicationTimeout, func() error {
		var v struct {
			Status *struct {
				Details []struct{ Code, Message string }
			}
		}
		if err := json.Unmarshal([]byte(root.MustCLI(t, "node", "show", node)), &v); err != nil {
			return err
		}
		if v.Status != nil {
			for _, d := range v.Status.Details {
				if d.Code == code && strings.Contains(d.Message, msg) {
					return nil
				}
			}
		}
		return fmt.Errorf("%s's status at the root has no %s detail saying %q: %+v", node, code, msg, v.Status)
	})
}

// eventuallySame waits until ref has one digest at every node, the root's first,
// and that digest is one of allowed (when given), and returns it.
func eventuallySame(t *testing.T, ref string, allowed map[string]bool, root *Node, others ...*Node) string {
	t.Helper()
	var want string
	Eventually(t, convergeTimeout, func() error {
		var err error
		want, err = resolve(root, ref)
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
	return want
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

// eventCounts reads how many events each node published.
func eventCounts(t *testing.T, nodes ...*Node) string {
	t.Helper()
	var out []string
	for _, n := range nodes {
		count := "0"
		for _, line := range strings.Split(scrape(t, n), "\n") {
			if v, ok := strings.CutPrefix(line, `outpost_events_published_total{result="ok"} `); ok {
				count = v
			}
		}
		out = append(out, n.opts.Name+"="+count)
	}
	return strings.Join(out, " ")
}
