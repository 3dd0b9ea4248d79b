package hierarchy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
)

var zeroTime time.Time

func settings(mode Mode, repos ...Pattern) Settings {
	s := Settings{Mode: mode, Repositories: repos}
	s.Defaults()
	return s
}

// startManager runs a Manager over real JetStream buckets.
func startManager(t *testing.T) *Manager { return startRoot(t).m }

// rootFixture is a root's embedded NATS server, its own connection and its Manager.
type rootFixture struct {
	srv *events.Server
	nc  *nats.Conn
	m   *Manager
}

// startRoot starts a root's NATS server with its buckets and Manager.
func startRoot(t *testing.T) rootFixture {
	t.Helper()
	ctx := context.Background()
	srv, nc := eventstest.StartServer(t, events.ServerConfig{Name: "hroot"})
	nodes, err := events.OpenBucket(ctx, nc, events.BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	status, err := events.OpenBucket(ctx, nc, events.BucketStatus)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := events.OpenBucket(ctx, nc, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(ManagerConfig{Store: NewStore(nodes), Tokens: NewTokenStore(tokens), Status: NewStatusStore(status), Root: "root",
		RootMode: ReadWrite, Endpoints: Endpoints{Registry: "127.0.0.1:5000", Gateway: srv.Addr().String()}})
	return rootFixture{srv: srv, nc: nc, m: m}
}

func TestManagerAppliesTheTreeRules(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "factory", "", settings(ReadWrite, "plant/*")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, "lineone", "factory", settings(ReadOnly, "plant/line1/*")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, parent string
		s            Settings
		want         error
		msg          string
	}{
		{"factory", "", settings(ReadOnly, "x"), ErrConflict, "already exists"},
		{"linetwo", "lineone", settings(ReadWrite, "plant/line1/a"), ErrInvalid, "lineone is ReadOnly"},
		{"linetwo", "factory", settings(ReadOnly, "plant2/*"), ErrInvalid, "not within the scope"},
		{"linetwo", "nowhere", settings(ReadOnly, "x"), ErrInvalid, "no such node"},
	} {
		_, err := m.Create(ctx, c.name, c.parent, c.s)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("create %s under %q: %v, want %v with %q", c.name, c.parent, err, c.want, c.msg)
		}
	}
	if err := m.Delete(ctx, "factory"); !errors.Is(err, ErrConflict) {
		t.Errorf("delete with children: %v", err)
	}
	if _, err := m.Update(ctx, "factory", func(s *Settings) error { s.Repositories = Scope{"other/*"}; return nil }); err == nil ||
		!strings.Contains(err.Error(), "lineone still syncs") {
		t.Errorf("narrowing below a child's scope: %v", err)
	}

	// Activation: one instance at a time until deactivated; the same instance may return.
	if _, err := m.Activate(ctx, "factory", "one", Endpoints{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, "factory", "one", Endpoints{}); err != nil {
		t.Errorf("same instance again: %v", err)
	}
	if _, err := m.Activate(ctx, "factory", "two", Endpoints{}); !errors.Is(err, ErrAlreadyActivated) {
		t.Errorf("second instance: %v, want ALREADY_ACTIVATED", err)
	}
	if _, err := m.Deactivate(ctx, "factory"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, "factory", "two", Endpoints{Registry: "10.1.1.1:5000", Gateway: "10.1.1.1:4222"}); err != nil {
		t.Errorf("after deactivate: %v", err)
	}

	// Settings: the first call makes password 1; later calls must say which to replace.
	cs, err := m.Settings(ctx, "lineone", 0)
	if err != nil || cs.ParentRegistry != "10.1.1.1:5000" || cs.SyncTokenPassword == "" {
		t.Fatalf("settings: %+v, %v", cs, err)
	}
	if _, err := m.Settings(ctx, "lineone", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("settings again without --generate-password: %v", err)
	}
	cs2, err := m.Settings(ctx, "lineone", 2)
	if err != nil {
		t.Fatal(err)
	}
	n, _, _ := m.store.Get(ctx, "lineone")
	if !n.SyncToken.Verify(cs.SyncTokenPassword) || !n.SyncToken.Verify(cs2.SyncTokenPassword) {
		t.Error("passwords 1 and 2 must both work after generating 2")
	}
}

// TestManagerRefusesSchedulesThatNeverOpen: create and update refuse descriptors,
// other field counts and schedules that never fire (or not every year), naming the
// schedule and why, and store nothing.
func TestManagerRefusesSchedulesThatNeverOpen(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "shipone", "", settings(ReadOnly, "fleet/*")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ schedule, msg string }{
		{"@every 6h", `"@every 6h": descriptors such as @every`},
		{"@daily", `"@daily": descriptors`},
		{"@reboot", `"@reboot": descriptors`},
		{"0 0 2 * * *", "has 6 fields; want a 5-field cron"},
		{"0 0 30 2 *", `"0 0 30 2 *": never fires`},
		{"0 0 31 4 *", "never fires"},
		{"0 0 31 2,4,6,9,11 *", "never fires"},
		{"0 0 29 2 *", "does not fire every year"},
	} {
		s := settings(ReadOnly, "fleet/*")
		s.SyncSchedule, s.SyncWindow = c.schedule, Duration(time.Hour)
		_, err := m.Create(ctx, "shiptwo", "", s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("create with schedule %q: %v, want invalid with %q", c.schedule, err, c.msg)
		}
		_, err = m.Update(ctx, "shipone", func(s *Settings) error {
			s.SyncSchedule, s.SyncWindow = c.schedule, Duration(time.Hour)
			return nil
		})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("update to schedule %q: %v, want invalid with %q", c.schedule, err, c.msg)
		}
	}
	if _, _, err := m.store.Get(ctx, "shiptwo"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused node was stored: %v", err)
	}
	n, _, err := m.store.Get(ctx, "shipone")
	if err != nil || n.Settings.SyncSchedule != DefaultSchedule {
		t.Errorf("a refused update was stored: %+v %v", n, err)
	}
	if _, err := m.Update(ctx, "shipone", func(s *Settings) error {
		s.SyncSchedule, s.SyncWindow = "0 0 28 2 *", Duration(time.Hour)
		return nil
	}); err != nil {
		t.Errorf("a yearly schedule: %v", err)
	}
}
