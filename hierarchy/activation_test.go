package hierarchy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestActivationFencesEveryOtherInstance: after a deactivation or another process's
// activation, the old instance is refused with a typed error that says why, by the
// check the gateway and the registry share, and the codes survive the wire.
func TestActivationFencesEveryOtherInstance(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	var changed []string
	m.onActivation = func(_ context.Context, node string) { changed = append(changed, node) }
	if _, err := m.Create(ctx, "factory", "", settings(ReadWrite, "plant/*")); err != nil {
		t.Fatal(err)
	}
	access := NewAccess(AccessConfig{Self: "root", Root: true, Nodes: m.store, Tokens: m.tokens})
	fence := func(instance string) error {
		t.Helper()
		access.snap = nil // read the store again
		g, err := access.Lookup("factory-sync")
		if err != nil {
			t.Fatal(err)
		}
		return g.Fence(instance)
	}
	if err := fence("oldinstance1"); !errors.Is(err, ErrDeactivated) {
		t.Errorf("never activated: %v, want DEACTIVATED", err)
	}
	if _, err := m.Activate(ctx, "factory", "", Endpoints{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("activation without an instance: %v", err)
	}
	if _, err := m.Activate(ctx, "factory", "oldinstance1", Endpoints{}); err != nil {
		t.Fatal(err)
	}
	if err := fence("oldinstance1"); err != nil {
		t.Errorf("the active instance: %v", err)
	}
	for _, c := range []struct {
		step, instance string
		want           error
		msg            string
	}{
		{"", "", ErrFenced, "process (without an instance id) is fenced"},
		{"", "otherinstance", ErrFenced, "node factory is active in another process since"},
		{"deactivate", "oldinstance1", ErrDeactivated, "node factory was deactivated at the root, so process oldinsta… is fenced"},
		{"activate newinstance2", "oldinstance1", ErrFenced, "process oldinsta… is fenced"},
		{"", "newinstance2", nil, ""},
	} {
		switch c.step {
		case "deactivate":
			if _, err := m.Deactivate(ctx, "factory"); err != nil {
				t.Fatal(err)
			}
		case "activate newinstance2":
			before, err := access.Lookup("factory-sync")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Activate(ctx, "factory", "newinstance2", Endpoints{}); err != nil {
				t.Fatal(err)
			}
			// A grant read before the activation lets the new process in: a refusal
			// is checked again on fresh definitions.
			access.loaded = time.Time{}
			if err := before.Fence("newinstance2"); err != nil {
				t.Errorf("the new process, on a grant read before its activation: %v", err)
			}
		}
		err := fence(c.instance)
		if c.want == nil {
			if err != nil {
				t.Errorf("after %s, %q: %v, want it let in", c.step, c.instance, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("after %q, instance %q: %v, want %v saying %q", c.step, c.instance, err, c.want, c.msg)
		}
		if strings.Contains(err.Error(), "newinstance2") {
			t.Errorf("the refusal names the active instance: %v", err)
		}
		// What the gateway answers, the child reads back as the same typed error.
		r := replyError(err)
		if back := errorOfCode(r.Code, r.Error); !errors.Is(back, c.want) || back.Error() != err.Error() {
			t.Errorf("over the wire: %q %q became %v", r.Code, r.Error, back)
		}
	}
	// The old instance restarting is refused as a second process.
	_, err := m.Activate(ctx, "factory", "oldinstance1", Endpoints{})
	if !errors.Is(err, ErrAlreadyActivated) || !strings.Contains(err.Error(), "run `outpost node deactivate factory`") {
		t.Errorf("old instance activating again: %v, want ALREADY_ACTIVATED", err)
	}
	if strings.Join(changed, ",") != "factory,factory,factory" {
		t.Errorf("activation hooks: %v, want one per change (activate, deactivate, activate)", changed)
	}
}

// TestRelayedActivationIsNotUndoneByAnOlderConfig: a node records the activation it
// relayed at once; a config its syncer fetched before must not put the old one back.
func TestRelayedActivationIsNotUndoneByAnOlderConfig(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "factory", "", settings(ReadWrite, "plant/*")); err != nil {
		t.Fatal(err)
	}
	before, _, err := m.store.Get(ctx, "factory")
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return before.Updated.Add(time.Second) }
	after, err := m.Activate(ctx, "factory", "newinstance2", Endpoints{})
	if err != nil {
		t.Fatal(err)
	}
	if written, err := m.store.putNewer(ctx, before); err != nil || written {
		t.Fatalf("an older definition was written over a newer one: %v %v", written, err)
	}
	got, _, _ := m.store.Get(ctx, "factory")
	if CheckInstance(got, "newinstance2") != nil {
		t.Errorf("stored activation %+v, want newinstance2's", got.Activation)
	}
	if written, err := m.store.putNewer(ctx, after); err != nil || !written {
		t.Errorf("the same definition again: %v %v, want it written", written, err)
	}
}
