package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/test/content"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/events"
)

// eventLog reads a node's log through `outpost events --output json`.
func eventLog(t testing.TB, n *Node) []events.Event {
	t.Helper()
	out := n.MustCLI(t, "events", "--output", "json")
	var evs []events.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("outpost events printed %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func TestEventLogRecordsEveryChangeAndSurvivesSIGKILL(t *testing.T) {
	node := StartNode(t, NodeOptions{Name: "siteone"})

	// 1. Exactly the changes made, with their fields, as `outpost events` prints them.
	tagged, untagged := content.Image(t, 2), content.Image(t, 1)
	if err := remote.Write(mustRef(t, node, "shop/web:1.0"), tagged, Auth); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, node, "shop/web@"+content.Digest(t, untagged)), untagged, Auth); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(mustRef(t, node, "shop/web:1.0"), Auth); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(mustRef(t, node, "shop/web@"+content.Digest(t, untagged)), Auth); err != nil {
		t.Fatal(err)
	}
	node.MustCLI(t, "repository", "delete", "shop/web")
	got := eventLog(t, node)
	want := []string{
		"push shop/web:1.0@" + content.Digest(t, tagged),
		"push shop/web@" + content.Digest(t, untagged),
		"tag-delete shop/web:1.0@" + content.Digest(t, tagged),
		"manifest-delete shop/web@" + content.Digest(t, untagged),
		"repository-delete shop/web@",
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i, e := range got {
		if s := summary(e); s != want[i] {
			t.Errorf("event %d: %s, want %s", i+1, s, want[i])
		}
		if e.Origin != "siteone" || e.ID == "" || e.Time.IsZero() || e.Sequence != uint64(i+1) {
			t.Errorf("event %d: origin %q id %q time %v seq %d", i+1, e.Origin, e.ID, e.Time, e.Sequence)
		}
	}
	if got[0].MediaType == "" || got[0].Size == 0 {
		t.Errorf("push event lacks media type or size: %+v", got[0])
	}

	// 2. Pushes acknowledged right before a SIGKILL are all in the log after restart.
	const pushes = 40
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked []string
	)
	for i := range pushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img := content.Image(t, 1)
			tag := fmt.Sprintf("build-%d", i)
			if err := remote.Write(mustRef(t, node, "shop/api:"+tag), img, Auth); err != nil {
				t.Errorf("push %s: %v", tag, err)
				return
			}
			mu.Lock()
			acked = append(acked, "push shop/api:"+tag+"@"+content.Digest(t, img))
			mu.Unlock()
		}()
	}
	wg.Wait()
	node.Kill()
	node.Start()
	logged := map[string]bool{}
	for _, e := range eventLog(t, node) {
		logged[summary(e)] = true
	}
	missing := 0
	for _, a := range acked {
		if !logged[a] {
			missing++
			t.Errorf("acknowledged but not in the log after SIGKILL: %s", a)
		}
	}
	t.Logf("%d pushes acknowledged before SIGKILL, %d missing after restart", len(acked), missing)
	if len(acked) != pushes {
		t.Fatalf("only %d of %d pushes acknowledged", len(acked), pushes)
	}
}

func summary(e events.Event) string {
	s := string(e.Action) + " " + e.Repository
	if e.Tag != "" {
		s += ":" + e.Tag
	}
	return s + "@" + e.Digest
}
