package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
	"github.com/outpost-edge/outpost/pipeline"
)

// TestPendingContent checks the estimate of what an outbox will move: the union
// of the queued manifests' blobs (an index's children's too, a shared blob
// once), less what the destination has, with deletes moving nothing; while the
// destination cannot be asked, what was learned before still counts.
func TestPendingContent(t *testing.T) {
	ctx := context.Background()
	_, nc := eventstest.StartServer(t, events.ServerConfig{})
	ob, err := events.OpenOutbox(ctx, nc, events.DownstreamOutbox("child1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	manifests := map[string]string{
		"sha256:a":   `{"config":{"digest":"sha256:ca","size":100},"layers":[{"digest":"sha256:shared","size":1000},{"digest":"sha256:la","size":2000}]}`,
		"sha256:b":   `{"config":{"digest":"sha256:cb","size":100},"layers":[{"digest":"sha256:shared","size":1000},{"digest":"sha256:lb","size":4000}]}`,
		"sha256:idx": `{"manifests":[{"digest":"sha256:c1"},{"digest":"sha256:c2"}]}`,
		"sha256:c1":  `{"config":{"digest":"sha256:cc","size":10},"layers":[{"digest":"sha256:l1","size":300}]}`,
		"sha256:c2":  `{"config":{"digest":"sha256:cc","size":10},"layers":[{"digest":"sha256:l2","size":500}]}`,
	}
	reads := 0
	est := newContentEstimator(func(_ context.Context, repo, d string) ([]byte, error) {
		reads++
		m, ok := manifests[d]
		if !ok {
			return nil, fmt.Errorf("GET %s@%s: 404", repo, d)
		}
		return []byte(m), nil
	})
	est.reuse = 0 // each call estimates again
	for i, e := range []events.Event{
		{Action: events.ActionPush, Repository: "app/a", Tag: "1", Digest: "sha256:a"},
		{Action: events.ActionPush, Repository: "app/b", Tag: "1", Digest: "sha256:b"},
		{Action: events.ActionPush, Repository: "app/a", Tag: "2", Digest: "sha256:a"}, // moved again: nothing more
		{Action: events.ActionPush, Repository: "app/i", Tag: "1", Digest: "sha256:idx"},
		{Action: events.ActionPush, Repository: "app/gone", Tag: "1", Digest: "sha256:deleted"},
		{Action: events.ActionTagDelete, Repository: "app/b", Tag: "0"},
	} {
		e.ID, e.Origin, e.Time = fmt.Sprint("ev", i), "root", time.Now()
		if err := ob.Append(ctx, &e, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	all := uint64(100 + 1000 + 2000 + 100 + 4000 + 10 + 300 + 500)
	p, err := est.estimate(ctx, ob, "child1", nil)
	if err != nil || p.Messages != 6 || p.Bytes != all {
		t.Fatalf("nothing known of the destination: %+v, %v; want 6 messages, %d bytes", p, err, all)
	}
	readsBefore := reads
	has := map[string]bool{"sha256:shared": true, "sha256:la": true, "sha256:ca": true}
	asked := 0
	check := func(_ context.Context, _, d string) (bool, error) { asked++; return has[d], nil }
	want := all - 1000 - 2000 - 100
	if p, _ = est.estimate(ctx, ob, "child1", check); p.Bytes != want {
		t.Fatalf("destination holding image a: %d bytes, want %d", p.Bytes, want)
	}
	if reads != readsBefore+1 { // only the deleted manifest is asked again
		t.Errorf("manifests read again: %d reads after %d", reads, readsBefore)
	}
	// Unreachable: what it had still counts, and nothing new is learned.
	away := func(context.Context, string, string) (bool, error) { return false, errors.New("connection refused") }
	if p, _ = est.estimate(ctx, ob, "child1", away); p.Bytes != want {
		t.Fatalf("destination away: %d bytes, want %d as known before", p.Bytes, want)
	}
	// Blobs it has are not asked again.
	asked = 0
	_, _ = est.estimate(ctx, ob, "child1", check)
	if asked != 0 {
		t.Errorf("asked %d times again within the recheck interval", asked)
	}
}

// TestLinkRates checks the rate over the last minute from the meter's counts.
func TestLinkRates(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, 50_000))
	}))
	defer srv.Close()
	m := pipeline.NewMeter(nil)
	r := &rateMeter{m: m}
	t0 := time.Now()
	if up, down := r.rates(t0); up != 0 || down != 0 {
		t.Fatalf("idle: %v %v", up, down)
	}
	c := &http.Client{Transport: m.Transport(http.DefaultTransport, "downstream")}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if up, down := r.rates(t0.Add(10 * time.Second)); up != 0 || down != 5000 {
		t.Fatalf("50,000 bytes down in 10 s: up %v, down %v B/s", up, down)
	}
	// Past a minute, the old samples drop out: idle again.
	r.rates(t0.Add(80 * time.Second))
	if _, down := r.rates(t0.Add(150 * time.Second)); down != 0 {
		t.Fatalf("a minute later: down %v B/s, want 0", down)
	}
}
