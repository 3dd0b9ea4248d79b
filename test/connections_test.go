package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// heldConn is one connection the test opens and leaves alone; closed is set when
// the node closes it.
type heldConn struct {
	conn   net.Conn
	quiet  time.Time // when it last sent or received anything
	closed chan time.Time
}

// holdIdle opens a keep-alive connection, makes one request on it, reads the
// answer, and then stays idle.
func holdIdle(host string) (*heldConn, error) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return watch(c, br), nil
}

// holdHalfHeaders opens a connection that sends part of its request headers and
// then nothing (slowloris).
func holdHalfHeaders(host string) (*heldConn, error) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "GET /v2/ HTTP/1.1\r\nHost: %s\r\nX-Slow: ", host); err != nil {
		c.Close()
		return nil, err
	}
	return watch(c, bufio.NewReader(c)), nil
}

func watch(c net.Conn, r io.Reader) *heldConn {
	h := &heldConn{conn: c, quiet: time.Now(), closed: make(chan time.Time, 1)}
	go func() {
		_, _ = io.Copy(io.Discard, r) // returns when the node closes it
		h.closed <- time.Now()
	}()
	return h
}

// TestIdleAndHalfOpenConnectionsCannotStopANode: a thousand idle keep-alive
// connections and a hundred half-sent requests do not stop a push or /readyz.
// The node holds at most --max-connections (set far below the flood here, as a
// small file descriptor limit would): a new connection replaces the longest idle.
// The rest close at --http-idle-timeout (headers too must arrive by then).
func TestIdleAndHalfOpenConnectionsCannotStopANode(t *testing.T) {
	const (
		idle, half = 1000, 100
		bound      = 200
		idleAfter  = 3 * time.Second
	)
	node := StartNode(t, NodeOptions{Args: []string{"--max-connections", fmt.Sprint(bound), "--http-idle-timeout", idleAfter.String()}})
	var held []*heldConn
	t.Cleanup(func() {
		for _, h := range held {
			h.conn.Close()
		}
	})
	began := time.Now()
	for i := range idle + half {
		open := holdIdle
		if i >= idle {
			open = holdHalfHeaders
		}
		h, err := open(node.Host)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, h)
	}
	t.Logf("%d idle and %d half-sent connections opened in %s", idle, half, time.Since(began).Round(time.Millisecond))

	// Clients still get through while the flood is held.
	start := time.Now()
	resp, err := http.Get(node.URL + "/readyz")
	if err != nil {
		t.Fatalf("/readyz under the flood: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz under the flood: %s %s", resp.Status, body)
	}
	src, want := writeLayout(t, 3)
	MustRun(t, clientTimeout, Tool(t, "crane"), "push", "--insecure", src, node.Host+"/flood/app:1")
	if got, err := resolve(node, "flood/app:1"); err != nil || got != want {
		t.Fatalf("after the push under the flood: %q %v, want %s", got, err, want)
	}
	t.Logf("readyz and a 3-layer crane push under the flood took %s", time.Since(start).Round(time.Millisecond))

	// The node closed all but the newest `bound` of the flood at once (replaced),
	// and the rest after the idle timeout; none outlives it by much.
	var mu sync.Mutex
	replaced, timedOut := 0, 0
	var latest time.Duration
	var wg sync.WaitGroup
	for _, h := range held {
		wg.Go(func() {
			select {
			case at := <-h.closed:
				mu.Lock()
				defer mu.Unlock()
				if at.Sub(h.quiet) < idleAfter/2 { // well before the idle timeout could close it
					replaced++
				} else {
					timedOut++
				}
				latest = max(latest, at.Sub(h.quiet))
			case <-time.After(idleAfter + 10*time.Second):
			}
		})
	}
	wg.Wait()
	t.Logf("closed by the node: %d replaced by newer connections, %d at the idle timeout; longest held %s",
		replaced, timedOut, latest.Round(time.Millisecond))
	if replaced+timedOut != len(held) {
		t.Errorf("%d of %d connections still open %s after they went quiet (idle timeout %s)",
			len(held)-replaced-timedOut, len(held), idleAfter+10*time.Second, idleAfter)
	}
	if replaced < len(held)-bound {
		t.Errorf("only %d connections were replaced while %d were opened with a bound of %d", replaced, len(held), bound)
	}
	if latest > idleAfter+3*time.Second {
		t.Errorf("a quiet connection was held %s, idle timeout %s", latest, idleAfter)
	}
}

// TestNodeRaisesItsFileDescriptorLimit: started with a soft limit of 1024 under a
// hard one of 4096 (a common service default), the node raises the soft limit
// (Go does at start) and bounds its connections at half of it.
func TestNodeRaisesItsFileDescriptorLimit(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is needed to start the node under a low soft limit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prlimit, "--nofile=1024:4096", Binary(t), "serve", "--data", t.TempDir(),
		"--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(os.Environ(), "OUTPOST_ADMIN_TOKEN="+AdminToken)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	var serving struct {
		Msg            string `json:"msg"`
		MaxConnections int    `json:"max_connections"`
	}
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &serving) == nil && serving.Msg == "serving" {
			break
		}
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var soft, hard string
	for _, line := range strings.Split(string(limits), "\n") {
		if f := strings.Fields(strings.TrimPrefix(line, "Max open files")); strings.HasPrefix(line, "Max open files") && len(f) >= 2 {
			soft, hard = f[0], f[1]
		}
	}
	// Go sets the soft limit to the hard one minus one (syscall/rlimit.go: so that
	// a later prlimit of its own is told apart).
	n, _ := strconv.Atoi(soft)
	if n < 4095 || hard != "4096" || serving.MaxConnections != n/2 {
		t.Errorf("under prlimit 1024:4096: open files soft %s hard %s, max connections %d; want 4095 or more, 4096, and half the soft limit", soft, hard, serving.MaxConnections)
	}
}
