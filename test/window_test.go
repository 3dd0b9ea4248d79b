package test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/outpost-edge/outpost/test/content"
)

// fakeClock moves a node's sync-window clock (outpost serve --clock-offset-file).
type fakeClock struct {
	t    *testing.T
	file string
	base time.Time // midnight UTC of the fake day 0
}

func newFakeClock(t *testing.T) *fakeClock {
	now := time.Now().UTC()
	return &fakeClock{t: t, file: filepath.Join(t.TempDir(), "clock-offset"),
		base: time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 10)}
}

// set makes the node's clock read day+hh:mm (UTC) from now on.
func (c *fakeClock) set(day int, hhmm string) {
	c.t.Helper()
	hm, err := time.Parse("15:04", hhmm)
	if err != nil {
		c.t.Fatal(err)
	}
	want := c.base.AddDate(0, 0, day).Add(time.Duration(hm.Hour())*time.Hour + time.Duration(hm.Minute())*time.Minute)
	if err := os.WriteFile(c.file, []byte(time.Until(want).String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// waitingWith waits until the root shows, in a report made after now, the node's link
// closed with at least one message waiting downstream and upstream as asked.
func waitingWith(t *testing.T, root *Node, node string, down, up bool) {
	t.Helper()
	since := time.Now()
	Eventually(t, replicationTimeout, func() error {
		var v []struct {
			Name   string
			Status *struct {
				State      string
				Reported   time.Time
				WindowOpen bool
				Links      []struct {
					Link            string
					PendingMessages uint64
				}
			}
		}
		if err := jsonOf(root.MustCLI(t, "node", "list", "--output", "json"), &v); err != nil {
			return err
		}
		for _, n := range v {
			if n.Name != node {
				continue
			}
			if n.Status == nil || !n.Status.Reported.After(since) {
				return fmt.Errorf("%s has not reported since %s", node, since.Format(time.TimeOnly))
			}
			if n.Status.State != "Waiting" || n.Status.WindowOpen {
				return fmt.Errorf("%s: %+v, want Waiting with the window closed", node, n.Status)
			}
			pending := map[string]uint64{}
			for _, l := range n.Status.Links {
				pending[l.Link] = l.PendingMessages
			}
			if (down && pending["downstream"] == 0) || (up && pending["upstream"] == 0) {
				return fmt.Errorf("%s: pending %v, want downstream>0=%v upstream>0=%v", node, pending, down, up)
			}
			return nil
		}
		return fmt.Errorf("%s not listed", node)
	})
}

// TestSyncWindowsGateTheLinkBothWays covers the window rules with an injected clock:
// nothing moves while closed, in either direction, across restarts; everything drains
// when the window opens, when a missed window is recovered, and on `sync now`.
func TestSyncWindowsGateTheLinkBothWays(t *testing.T) {
	clock := newFakeClock(t)
	clock.set(0, "12:00") // outside the 02:00-04:00 window
	root := StartNode(t, NodeOptions{})
	ship := StartChild(t, root, Child{Name: "shipone", Mode: "ReadWrite", Repositories: []string{"ship/*"},
		CreateArgs: []string{"--sync-schedule", "0 2 * * *", "--sync-window", "PT2H"},
		ServeArgs:  []string{"--clock-offset-file", clock.file}})

	// Closed: a push at either end waits in its outbox.
	da := push(t, root, "ship/a:1", content.Image(t, 1))
	db := push(t, ship, "ship/b:1", content.Image(t, 1))
	waitingWith(t, root, "shipone", true, true)
	for _, c := range []struct {
		n   *Node
		ref string
	}{{ship, "ship/a:1"}, {root, "ship/b:1"}} {
		if got, _ := resolve(c.n, c.ref); got != "" {
			t.Fatalf("%s moved while the window was closed", c.ref)
		}
	}

	// Open: both drain.
	clock.set(1, "02:30")
	eventuallyAt(t, "ship/a:1", da, ship)
	eventuallyAt(t, "ship/b:1", db, root)

	// Closed again, across a restart of the child: still nothing moves.
	clock.set(1, "12:00")
	dc := push(t, root, "ship/c:1", content.Image(t, 1))
	waitingWith(t, root, "shipone", true, false)
	ship.Stop()
	ship.Start()
	waitingWith(t, root, "shipone", true, false)
	if got, _ := resolve(ship, "ship/c:1"); got != "" {
		t.Fatal("ship/c moved while the window was closed")
	}

	// The child is down through the next window; when it comes back it drains once.
	ship.Stop()
	clock.set(2, "06:00")
	ship.Start()
	eventuallyAt(t, "ship/c:1", dc, ship)

	// `sync now` drains whatever the window.
	clock.set(2, "12:00")
	dd := push(t, root, "ship/d:1", content.Image(t, 1))
	waitingWith(t, root, "shipone", true, false)
	ship.MustCLI(t, "sync", "now")
	eventuallyAt(t, "ship/d:1", dd, ship)
}

// TestTagMovedTenTimesBehindAClosedWindowIsCopiedOnce: coalescing. Only the tag's
// final state crosses the link when the window opens.
func TestTagMovedTenTimesBehindAClosedWindowIsCopiedOnce(t *testing.T) {
	const layer = 256 << 10
	clock := newFakeClock(t)
	clock.set(0, "12:00")
	root := StartNode(t, NodeOptions{})
	ship := StartChild(t, root, Child{Name: "shiptwo", Mode: "ReadOnly", Repositories: []string{"ship/*"},
		CreateArgs: []string{"--sync-schedule", "0 2 * * *", "--sync-window", "PT2H"},
		ServeArgs:  []string{"--clock-offset-file", clock.file}})
	var last string
	for range 10 {
		last = push(t, root, "ship/moving:latest", content.Append(t, content.Image(t, 0), content.Layer(t, layer, types.DockerLayer)))
	}
	waitingWith(t, root, "shiptwo", true, false)
	before := linkBytes(t, ship, "downstream")
	clock.set(1, "02:30")
	eventuallyAt(t, "ship/moving:latest", last, ship)
	moved := linkBytes(t, ship, "downstream") - before
	t.Logf("10 moves of a tag with a %d KiB layer: %.0f KiB moved when the window opened", layer>>10, moved/1024)
	if moved < layer || moved > 2*layer {
		t.Errorf("moved %.0f bytes for a tag moved 10 times with %d-byte layers: want the final image only", moved, layer)
	}
}
