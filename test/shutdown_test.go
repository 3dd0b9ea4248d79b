package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMFinishesInFlightRequests: an upload under way when SIGTERM arrives
// completes, then the node exits cleanly.
func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	node := StartNode(t, NodeOptions{})
	start, err := http.NewRequest(http.MethodPost, node.URL+"/v2/app/blobs/uploads/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(Authorize(start))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	location := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || location == "" {
		t.Fatalf("start upload: %d %q", resp.StatusCode, location)
	}
	if strings.HasPrefix(location, "/") {
		location = node.URL + location
	}

	chunk := bytes.Repeat([]byte("x"), 1<<20)
	body, feed := io.Pipe()
	req, err := http.NewRequest(http.MethodPatch, location, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	Authorize(req)
	result := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("upload across shutdown: %v", err)
			close(result)
			return
		}
		result <- resp
	}()
	if _, err := feed.Write(chunk); err != nil {
		t.Fatal(err)
	}
	// SIGTERM only once the node is storing the upload, not while it sits unaccepted.
	partial := filepath.Join(node.Data(), "registry/docker/registry/v2/repositories/app/_uploads",
		resp.Header.Get("Docker-Upload-Uuid"), "data")
	Eventually(t, 10*time.Second, func() error {
		if fi, err := os.Stat(partial); err != nil || fi.Size() == 0 {
			return fmt.Errorf("upload not being stored yet: %v", err)
		}
		return nil
	})
	node.Signal(syscall.SIGTERM)
	Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(node.Output(), `"msg":"shutting down"`) {
			return errors.New("node has not begun shutting down")
		}
		return nil
	})
	if _, err := feed.Write(chunk); err != nil {
		t.Fatal(err)
	}
	feed.Close()
	resp, ok := <-result
	if !ok {
		t.FailNow()
	}
	resp.Body.Close()
	if want := fmt.Sprintf("0-%d", 2*len(chunk)-1); resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != want {
		t.Errorf("in-flight upload: %d range %q, want 202 range %s", resp.StatusCode, resp.Header.Get("Range"), want)
	}
	if err := node.Wait(30 * time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if !strings.Contains(node.Output(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged")
	}
}
