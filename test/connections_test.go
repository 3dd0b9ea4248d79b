package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
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
