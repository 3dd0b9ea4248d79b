package test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Browser is a headless Chromium (Debian's `chromium`) driven over the DevTools
// protocol on a pipe (--remote-debugging-pipe: JSON messages separated by NUL
// on file descriptors 3 and 4), so tests need no WebSocket client and no
// dependency: a real browser renders the page, runs its script, keeps its
// cookies and submits its forms.
type Browser struct {
	t       testing.TB
	cmd     *exec.Cmd
	w       *os.File
	mu      sync.Mutex
	next    int
	replies map[int]chan cdpMessage
	session string
	done    chan struct{}
}

type cdpMessage struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// StartBrowser starts headless Chromium with a fresh profile and one page, and
// stops it when the test ends. A missing chromium fails the test (make
// system-deps installs it).
func StartBrowser(t testing.TB) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (apt-get install chromium; make system-deps does it): %v", err)
	}
	toBrowser, browserIn, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	browserOut, fromBrowser, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
		"--user-data-dir="+t.TempDir(), "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
		"--window-size=1440,900", "--disable-extensions", "--disable-background-networking", "about:blank")
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser} // fd 3: it reads; fd 4: it writes
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	b := &Browser{t: t, cmd: cmd, w: browserIn, replies: map[int]chan cdpMessage{}, done: make(chan struct{})}
	go b.read(browserOut)
	t.Cleanup(func() {
		_, _ = b.call("Browser.close", nil)
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
		browserIn.Close()
	})
	var targets struct {
		TargetInfos []struct {
			TargetID string `json:"targetId"`
			Type     string `json:"type"`
		} `json:"targetInfos"`
	}
	b.must("Target.getTargets", nil, &targets)
	for _, ti := range targets.TargetInfos {
		if ti.Type == "page" {
			var att struct {
				SessionID string `json:"sessionId"`
			}
			b.must("Target.attachToTarget", map[string]any{"targetId": ti.TargetID, "flatten": true}, &att)
			b.session = att.SessionID
			break
		}
	}
	if b.session == "" {
		t.Fatal("chromium: no page target")
	}
	return b
}

func (b *Browser) read(r *os.File) {
	defer close(b.done)
	br := bufio.NewReader(r)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(raw[:len(raw)-1], &m) != nil || m.ID == 0 {
			continue // events: not needed, the tests poll
		}
		b.mu.Lock()
		ch := b.replies[m.ID]
		delete(b.replies, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

func (b *Browser) call(method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpMessage, 1)
	b.replies[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if b.session != "" && method != "Browser.close" {
		msg["sessionId"] = b.session
	}
	data, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(data, 0)); err != nil {
		return nil, fmt.Errorf("chromium %s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, fmt.Errorf("chromium %s: %s", method, m.Error.Message)
		}
		return m.Result, nil
	case <-b.done:
		return nil, fmt.Errorf("chromium %s: browser exited", method)
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("chromium %s: no answer in 30s", method)
	}
}

func (b *Browser) must(method string, params, out any) {
	b.t.Helper()
	res, err := b.call(method, params)
	if err != nil {
		b.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(res, out); err != nil {
			b.t.Fatalf("chromium %s: %v", method, err)
		}
	}
}

// Navigate opens url and waits until the document has loaded.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	b.must("Page.navigate", map[string]any{"url": url}, nil)
	b.WaitLoaded()
}

// WaitLoaded waits until the current document is complete.
func (b *Browser) WaitLoaded() {
	b.t.Helper()
	Eventually(b.t, 20*time.Second, func() error {
		var state string
		if err := b.Eval(`document.readyState`, &state); err != nil {
			return err
		}
		if state != "complete" {
			return fmt.Errorf("document %s", state)
		}
		return nil
	})
}

// Eval evaluates a JavaScript expression in the page and decodes its value.
func (b *Browser) Eval(expr string, out any) error {
	res, err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return fmt.Errorf("evaluate %q: %s", expr, r.ExceptionDetails.Text)
	}
	if out == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// Screenshot writes the whole page as a PNG to file.
func (b *Browser) Screenshot(file string) {
	b.t.Helper()
	var height int
	if err := b.Eval(`document.documentElement.scrollHeight`, &height); err != nil {
		b.t.Fatal(err)
	}
	b.must("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1440, "height": max(height, 600), "deviceScaleFactor": 1, "mobile": false}, nil)
	var shot struct {
		Data string `json:"data"`
	}
	b.must("Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
