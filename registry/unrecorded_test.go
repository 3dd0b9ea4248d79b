package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
	"github.com/outpost-edge/outpost/test/content"
)

// TestUnrecordedChangeIs503: a manifest PUT whose event the log does not take
// before the publish's retries run out (no stream answers: what a root tier meets
// while its EVENTS stream elects a leader) answers 503 UNAVAILABLE with Retry-After,
// so clients try again. Before, distribution answered 500 UNKNOWN.
func TestUnrecordedChangeIs503(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, nc := eventstest.StartServer(t, events.ServerConfig{Dir: dir + "/nats", Name: "testnode"})
	log, err := events.OpenLog(ctx, nc, events.LogConfig{Placement: events.Placement{Replicas: 1,
		Publish: events.RetryPolicy{Timeout: time.Second, Attempt: 250 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := New(ctx, Config{Dir: dir + "/registry", Node: "testnode", Publisher: log})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	img := content.Image(t, 1)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/team/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		if err := remote.WriteLayer(repo, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := partial.ConfigLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, cfg); err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()

	// No stream takes the event: publishes meet no responders until they give up.
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(events.StreamName); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/team/app/manifests/v1", bytes.NewReader(raw))
	req.Header.Set("Content-Type", string(mt))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		len(body.Errors) != 1 || body.Errors[0].Code != codeUnavailable || !strings.Contains(body.Errors[0].Message, "try again") {
		t.Fatalf("manifest PUT with no event log: %s (Retry-After %q) %+v, want 503 UNAVAILABLE saying to try again",
			resp.Status, resp.Header.Get("Retry-After"), body.Errors)
	}
}
