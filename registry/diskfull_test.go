package registry

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestServerErrorsNameNoServerPath: a storage failure that says the disk is full
// (in any wording the storage and NATS use) becomes a 507 with a plain message;
// another one naming the storage directory becomes a 500 without it; other
// answers pass as they are. The original goes to the node's log.
func TestServerErrorsNameNoServerPath(t *testing.T) {
	dir := t.TempDir()
	var logged strings.Builder
	d := &diskSpace{dir: dir, minFree: 1, health: newHealth(time.Now), log: slog.New(slog.NewTextHandler(&logged, nil))}
	for _, c := range []struct {
		status     int
		body       string
		wantStatus int
		want, not  string
	}{
		{500, `{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"filesystem: write ` + dir + `/docker/registry/v2/repositories/a/_uploads/x/data: no space left on device"}]}`,
			507, "the node's disk is full", dir},
		{500, `{"errors":[{"code":"UNKNOWN","message":"record push of a: nats: write ` + dir + `/x.blk: disk quota exceeded"}]}`, 507, "the node's disk is full", dir},
		{500, `{"errors":[{"code":"UNKNOWN","message":"open ` + dir + `/docker/registry/v2/blobs/x: permission denied"}]}`, 500, "storage error at the node", dir},
		{500, `{"errors":[{"code":"UNKNOWN","message":"record push of a: nats: timeout"}]}`, 500, "nats: timeout", "storage error"},
		{201, `created`, 201, "created", ""},
	} {
		h := d.guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(c.status)
			_, _ = io.WriteString(w, c.body)
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/a/blobs/x", nil))
		got := rec.Body.String()
		if rec.Code != c.wantStatus || !strings.Contains(got, c.want) || (c.not != "" && strings.Contains(got, c.not)) {
			t.Errorf("answer %d %s: became %d %s; want %d with %q and without %q", c.status, c.body, rec.Code, got, c.wantStatus, c.want, c.not)
		}
	}
	if !strings.Contains(logged.String(), "no space left on device") {
		t.Errorf("the original answer was not logged: %s", logged.String())
	}
	// A write with less free than the reserve is refused before it starts, and
	// readiness says why.
	d.minFree = 1 << 62
	rec := httptest.NewRecorder()
	d.guard(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v2/a/blobs/uploads/", nil))
	if rec.Code != http.StatusInsufficientStorage || strings.Contains(rec.Body.String(), dir) {
		t.Errorf("a write on a full disk: %d %s", rec.Code, rec.Body.String())
	}
	d.ready()
	if err := d.health.err(); err == nil || !strings.Contains(err.Error(), "disk is full") || strings.Contains(err.Error(), dir) {
		t.Errorf("readiness on a full disk: %v", err)
	}
}

// TestS3StorageKeepsNoDiskReserve: on S3 no write is refused for want of local
// disk (the bucket has no free space to read) and readiness says nothing of it,
// while a server error naming the S3 endpoint is still replaced.
func TestS3StorageKeepsNoDiskReserve(t *testing.T) {
	var logged strings.Builder
	cfg := &Config{MinFreeBytes: 1 << 62, Logger: slog.New(slog.NewTextHandler(&logged, nil)),
		Storage: StorageConfig{Driver: StorageS3, S3: S3Config{Bucket: "b", Endpoint: "http://10.1.2.3:8333"}}}
	d := newDiskSpace(cfg, newHealth(time.Now))
	if !strings.Contains(logged.String(), "storage is S3: no free-space reserve") {
		t.Errorf("start log does not say why no reserve is kept: %s", logged.String())
	}
	rec := httptest.NewRecorder()
	d.guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })).
		ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v2/a/blobs/uploads/", nil))
	if rec.Code != http.StatusAccepted {
		t.Errorf("a write on S3 with a reserve larger than any disk: %d %s, want it let through", rec.Code, rec.Body.String())
	}
	d.ready()
	if err := d.health.err(); err != nil {
		t.Errorf("readiness on S3: %v", err)
	}
	h := d.guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNKNOWN","message":"s3aws: RequestError: send request failed: Put \"http://10.1.2.3:8333/b/docker/x\": dial tcp: connection refused"}]}`)
	}))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/a/blobs/x", nil))
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "10.1.2.3") || !strings.Contains(rec.Body.String(), "storage error at the node") {
		t.Errorf("S3 error answer became %d %s, want 500 without the endpoint", rec.Code, rec.Body.String())
	}
}
