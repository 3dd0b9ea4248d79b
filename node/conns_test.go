package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBodiesMayTakeLongWhileTheyMove: a request body that keeps moving may take
// many times the stall timeout (a multi-GiB blob over a slow link); one that
// stops is cut off after it, and so is a response the client stops reading.
func TestBodiesMayTakeLongWhileTheyMove(t *testing.T) {
	const stall = 300 * time.Millisecond
	read := make(chan error, 4)
	srv := &http.Server{Handler: progressDeadlines(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/download" {
			chunk := make([]byte, 1<<20)
			for range 256 { // 256 MiB the client never reads
				if _, err := w.Write(chunk); err != nil {
					read <- err
					return
				}
			}
			read <- nil
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		read <- err
		fmt.Fprintf(w, "%d", n)
	}), stall)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	send := func(pieces int, gap time.Duration) (time.Duration, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		began := time.Now()
		fmt.Fprintf(c, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 10)
		for range pieces {
			time.Sleep(gap)
			if _, err := c.Write([]byte("x")); err != nil {
				break
			}
		}
		err = <-read
		return time.Since(began), err
	}
	// Ten pieces, each within the stall timeout: 2.5 stall timeouts in all.
	if took, err := send(10, stall/4); err != nil {
		t.Errorf("a body that keeps moving was cut off after %s: %v", took, err)
	}
	// Three pieces, then silence.
	if took, err := send(3, stall/4); err == nil || !strings.Contains(err.Error(), "timeout") || took > 3*stall {
		t.Errorf("a body that stopped: %v after %s; want a timeout about %s after it stopped", err, took, stall)
	}
	// A client that never reads its download.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	began := time.Now()
	fmt.Fprintf(c, "GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
	_, _ = bufio.NewReader(c).Peek(1)
	select {
	case err := <-read:
		if err == nil {
			t.Errorf("256 MiB went to a client that read nothing")
		}
		t.Logf("a response nobody reads stopped after %s: %v", time.Since(began).Round(time.Millisecond), err)
	case <-time.After(10 * stall):
		t.Errorf("a response nobody reads still runs after %s", 10*stall)
	}
}
