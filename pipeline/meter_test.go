package pipeline

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMeterCountsAndLimits(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 64<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(payload)
	}))
	defer srv.Close()
	moved := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moved"}, []string{"direction"})
	m := NewMeter(moved)
	client := &http.Client{Transport: m.Transport(http.DefaultTransport, "downstream")}

	get := func() time.Duration {
		start := time.Now()
		resp, err := client.Post(srv.URL, "application/octet-stream", bytes.NewReader(payload[:16<<10]))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return time.Since(start)
	}
	get()
	if got := testutil.ToFloat64(moved.WithLabelValues("downstream")); got != 80<<10 {
		t.Errorf("counted %v bytes, want %d (16 KiB up, 64 KiB down)", got, 80<<10)
	}
	// 80 KiB at 160 KiB/s with a 32 KiB burst takes at least ~0.3 s.
	m.SetLimit(160 << 10)
	if d := get(); d < 250*time.Millisecond {
		t.Errorf("80 KiB under a 160 KiB/s limit took %s", d)
	}
	m.SetLimit(0)
	if d := get(); d > 250*time.Millisecond {
		t.Errorf("unlimited again, it took %s", d)
	}
}
