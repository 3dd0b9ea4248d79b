package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
)

// showStatus is what `node show` says of a node's last report.
type showStatus struct {
	Settings struct{ SyncSchedule string }
	Status   *struct {
		State      string
		Reported   time.Time
		WindowOpen bool
		Details    []struct{ Code, Message string }
	}
}

func showNode(t *testing.T, root *Node, name string) (showStatus, error) {
	t.Helper()
	var v showStatus
	out, err := root.CLI(t, "node", "show", name)
	if err != nil {
		return v, fmt.Errorf("%v: %s", err, out)
	}
	return v, jsonOf(out, &v)
}

// storeScheduleAround writes a node's sync schedule into a stopped root's node
// bucket directly, as a definition stored before the checks existed would be:
// the root's own NATS store, opened in this process, no API in the way.
func storeScheduleAround(t *testing.T, root *Node, node, schedule string) {
	t.Helper()
	ctx := context.Background()
	// Let go of the store before the root restarts on it.
	srv, nc := eventstest.StartServer(t, events.ServerConfig{Dir: filepath.Join(root.Data(), "nats"), Name: "root"})
	defer srv.Shutdown()
	defer nc.Close()
	b, err := events.OpenBucket(ctx, nc, events.BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := b.Get(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	var def map[string]any
	if err := json.Unmarshal(data, &def); err != nil {
		t.Fatal(err)
	}
	def["settings"].(map[string]any)["syncSchedule"] = schedule
	if data, err = json.Marshal(def); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, node, data); err != nil {
		t.Fatal(err)
	}
}

// TestAStoredScheduleThatNeverOpensIsReportedNotHung: a schedule the checks refuse,
// already stored at the root (written around the API), reaches a site. The site
// keeps serving, reports SYNC_SCHEDULE_INVALID saying why, starts again on it (a
// node that had a window before used to spin in the missed-window search, deaf to
// SIGTERM, answering 503 for ever), stops on SIGTERM at once, and recovers when
// the operator sets a working schedule.
func TestAStoredScheduleThatNeverOpensIsReportedNotHung(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "shipone", Mode: "ReadOnly", Repositories: []string{"fleet/*"},
		CreateArgs: []string{"--sync-schedule", "* * * * *", "--sync-window", "PT1H"}})
	// Once the root has seen the window open, the site has recorded it (for
	// missed-window recovery, the path that used to hang).
	Eventually(t, replicationTimeout, func() error {
		v, err := showNode(t, root, "shipone")
		if err != nil || v.Status == nil || !v.Status.WindowOpen {
			return fmt.Errorf("shipone's window not reported open yet: %+v %v", v.Status, err)
		}
		return nil
	})
	for _, c := range []struct{ schedule, why string }{
		{"0 0 30 2 *", "never fires"},
		{"@every 6h", "descriptors such as @every"},
		{"0 0 2 * * *", "has 6 fields; want a 5-field cron"},
	} {
		root.Stop()
		storeScheduleAround(t, root, "shipone", c.schedule)
		root.Start()
		reported := func(what string) {
			t.Helper()
			since := time.Now()
			Eventually(t, replicationTimeout, func() error {
				v, err := showNode(t, root, "shipone")
				if err != nil {
					return err
				}
				if v.Settings.SyncSchedule != c.schedule {
					return fmt.Errorf("the root holds schedule %q, want %q", v.Settings.SyncSchedule, c.schedule)
				}
				if v.Status == nil || v.Status.Reported.Before(since) {
					return fmt.Errorf("%s: no report from shipone since %s", what, since)
				}
				for _, d := range v.Status.Details {
					if d.Code == "SYNC_SCHEDULE_INVALID" && strings.Contains(d.Message, c.why) && strings.Contains(d.Message, "node update shipone") {
						if v.Status.State != "Unhealthy" || v.Status.WindowOpen {
							return fmt.Errorf("%s: state %s, window open %v; want Unhealthy and closed", what, v.Status.State, v.Status.WindowOpen)
						}
						return nil
					}
				}
				return fmt.Errorf("%s: shipone reports %s %+v, want SYNC_SCHEDULE_INVALID saying %q", what, v.Status.State, v.Status.Details, c.why)
			})
		}
		reported("schedule " + c.schedule + " from the root")

		// A restart on it: the site serves, reports, and stops on SIGTERM at once.
		site.Stop()
		site.Start()
		resp, err := http.Get(site.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("schedule %q: the restarted site's /readyz: %s", c.schedule, resp.Status)
		}
		reported("schedule " + c.schedule + " after a restart")
		began := time.Now()
		site.Signal(syscall.SIGTERM)
		if err := site.Wait(5 * time.Second); err != nil {
			t.Fatalf("schedule %q: SIGTERM: %v\n%s", c.schedule, err, site.Output())
		}
		t.Logf("schedule %q: reported, and stopped %s after SIGTERM", c.schedule, time.Since(began).Round(time.Millisecond))
		site.Start()
	}

	// The operator's fix goes through the checks and clears the report.
	root.MustCLI(t, "node", "update", "shipone", "--sync-schedule", "0 2 * * *", "--sync-window", "PT2H")
	since := time.Now()
	Eventually(t, replicationTimeout, func() error {
		v, err := showNode(t, root, "shipone")
		if err != nil || v.Status == nil || v.Status.Reported.Before(since) {
			return fmt.Errorf("no report since the fix: %+v %v", v.Status, err)
		}
		for _, d := range v.Status.Details {
			if d.Code == "SYNC_SCHEDULE_INVALID" {
				return fmt.Errorf("still reported after the fix: %s", d.Message)
			}
		}
		return nil
	})
}
