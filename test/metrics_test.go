package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/test/content"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func scrape(t testing.TB, n *Node) string {
	t.Helper()
	resp, err := http.Get(n.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func TestMetricsHealthAndReadiness(t *testing.T) {
	node := StartNode(t, NodeOptions{})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(node.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	const pushes = 3
	for i := range pushes {
		if err := remote.Write(mustRef(t, node, fmt.Sprintf("m/app:%d", i)), content.Image(t, 1), Auth); err != nil {
			t.Fatal(err)
		}
	}
	m := scrape(t, node)
	for _, want := range []string{
		fmt.Sprintf(`outpost_events_published_total{result="ok"} %d`, pushes),
		fmt.Sprintf(`outpost_event_log_messages %d`, pushes),
		fmt.Sprintf(`outpost_http_requests_total{code="201",method="PUT",route="manifests"} %d`, pushes),
		fmt.Sprintf(`outpost_event_publish_duration_seconds_count %d`, pushes),
		`outpost_event_log_bytes `,
		`outpost_http_request_duration_seconds_bucket{method="PUT",route="manifests",le="+Inf"} 3`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
