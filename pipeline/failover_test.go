package pipeline

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// downEndpoint is a host:port on 127.0.0.1 where nothing listens.
func downEndpoint(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// A site's copies go on through another parent endpoint when the one in use is
// down, and stay there; requests to other hosts pass untouched.
func TestFailoverSwitchesEndpoint(t *testing.T) {
	var hits atomic.Int64
	var lastBody atomic.Value
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		lastBody.Store(string(b))
		// The Host header names the member that answers, as distribution's
		// absolute Location URLs and token realm then do.
		w.Header().Set("Location", "http://"+r.Host+r.URL.Path)
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="outpost"`)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer live.Close()
	liveHost := strings.TrimPrefix(live.URL, "http://")
	down := downEndpoint(t)
	f := NewFailover(nil, []string{down, liveHost}, slog.New(slog.DiscardHandler))
	c := &http.Client{Transport: f}

	// Addressed to the endpoint that is down: it reaches the live one.
	resp, err := c.Get("http://" + down + "/v2/")
	if err != nil {
		t.Fatalf("GET with the first endpoint down: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || f.Current() != liveHost || hits.Load() != 1 {
		t.Fatalf("GET: %d, current %s; want 202 from %s", resp.StatusCode, f.Current(), liveHost)
	}
	// The URLs in the answer name the endpoint the client addressed: it goes on
	// with that one name (and accepts the realm as the registry's own).
	if loc, auth := resp.Header.Get("Location"), resp.Header.Get("WWW-Authenticate"); loc != "http://"+down+"/v2/" ||
		auth != `Bearer realm="http://`+down+`/token",service="outpost"` {
		t.Errorf("Location %q, WWW-Authenticate %q; want both naming %s", loc, auth, down)
	}
	// A PUT whose body can be read again goes too; the next requests go straight
	// to the live endpoint.
	req, _ := http.NewRequest(http.MethodPut, "http://"+down+"/v2/app/manifests/1", bytes.NewReader([]byte("manifest")))
	if resp, err = c.Do(req); err != nil {
		t.Fatalf("PUT: %v", err)
	}
	resp.Body.Close()
	if got := lastBody.Load(); got != "manifest" || hits.Load() != 2 {
		t.Errorf("PUT body %q after %d requests; want the whole body at the live endpoint", got, hits.Load())
	}
	// A host it does not fail over for passes as it is (and fails as it is).
	other := downEndpoint(t)
	if _, err := c.Get("http://" + other + "/token"); err == nil || !strings.Contains(err.Error(), other) {
		t.Errorf("GET to a host not in the list: %v; want its own connection error", err)
	}

	// Both down: the error says so, and nothing is sent twice to the live one.
	f2 := NewFailover(nil, []string{down, downEndpoint(t)}, slog.New(slog.DiscardHandler))
	if _, err := (&http.Client{Transport: f2}).Get("http://" + down + "/v2/"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("every endpoint down: %v; want connection refused", err)
	}
}

// A connection the endpoint drops after the request left: a GET goes to the next
// endpoint, a PATCH (an upload chunk) is left to the copy's own retry.
func TestFailoverDroppedConnection(t *testing.T) {
	drops := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer drops.Close()
	var got atomic.Int64
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
	defer live.Close()
	dropHost, liveHost := strings.TrimPrefix(drops.URL, "http://"), strings.TrimPrefix(live.URL, "http://")

	f := NewFailover(nil, []string{dropHost, liveHost}, slog.New(slog.DiscardHandler))
	req, _ := http.NewRequest(http.MethodPatch, "http://"+dropHost+"/v2/app/blobs/uploads/x", strings.NewReader("chunk"))
	if _, err := (&http.Client{Transport: f}).Do(req); err == nil {
		t.Error("a PATCH whose connection dropped succeeded")
	}
	if got.Load() != 0 || f.Current() != liveHost {
		t.Errorf("after the dropped PATCH: %d requests at the live endpoint, current %s; want 0 and %s", got.Load(), f.Current(), liveHost)
	}

	f = NewFailover(nil, []string{dropHost, liveHost}, slog.New(slog.DiscardHandler))
	resp, err := (&http.Client{Transport: f}).Get("http://" + dropHost + "/v2/app/manifests/1")
	if err != nil {
		t.Fatalf("GET whose connection dropped: %v; want it sent to the next endpoint", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || got.Load() != 1 {
		t.Errorf("GET: %d, %d requests at the live endpoint", resp.StatusCode, got.Load())
	}
}
