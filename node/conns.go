package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// HTTP connection limits. A node serves multi-GiB blobs over slow site links, so
// there is no whole-request ReadTimeout or WriteTimeout: a request body or response
// only has to keep moving (bodyStall). What cannot hold a node's file descriptors is
// a connection that does nothing: idle keep-alives close after IdleTimeout, headers
// must arrive within HeaderTimeout, and past MaxConnections a new connection takes
// the place of the one idle the longest.
type HTTPLimits struct {
	// MaxConnections bounds the open HTTP connections; 0: half the process's file
	// descriptor limit, at most defaultMaxConnections.
	MaxConnections int
	// IdleTimeout closes a keep-alive connection that waits this long for its next
	// request.
	IdleTimeout time.Duration
	// HeaderTimeout bounds the time to send a request's headers (at most IdleTimeout).
	HeaderTimeout time.Duration
	// BodyStall ends a request whose body, or whose response, makes no progress
	// for this long.
	BodyStall time.Duration
}

const defaultMaxConnections = 8192

func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{IdleTimeout: 2 * time.Minute, HeaderTimeout: 30 * time.Second, BodyStall: 2 * time.Minute}
}

// Validate fills the connection bound from the descriptor limit and checks the rest.
func (l *HTTPLimits) Validate() error {
	if l.MaxConnections < 0 {
		return fmt.Errorf("max-connections %d: must be 0 (from the file descriptor limit) or more", l.MaxConnections)
	}
	if l.MaxConnections == 0 {
		// Go raises the soft RLIMIT_NOFILE to the hard one at start (since 1.19);
		// half of it leaves room for NATS, storage and the children's gateway links.
		var rl syscall.Rlimit
		l.MaxConnections = defaultMaxConnections
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/2 < uint64(l.MaxConnections) {
			l.MaxConnections = max(int(rl.Cur/2), 16)
		}
	}
	if l.IdleTimeout <= 0 || l.HeaderTimeout <= 0 || l.BodyStall <= 0 {
		return errors.New("http timeouts: idle, header and body timeouts must be positive")
	}
	// A connection that has not sent its headers within the idle timeout is idle.
	l.HeaderTimeout = min(l.HeaderTimeout, l.IdleTimeout)
	return nil
}

// connLimiter is a listener that holds at most max connections open. At the bound,
// a new connection closes the one that has waited the longest without a request in
// flight (idle between requests, or still sending its first headers), so idle
// keep-alives and half-sent headers cannot lock clients out; only when every
// connection has a request in flight does Accept wait for one to end.
type connLimiter struct {
	net.Listener
	max int

	mu    sync.Mutex
	freed *sync.Cond
	conns map[net.Conn]connInfo
}

type connInfo struct {
	busy  bool // a request in flight
	since time.Time
}

func newConnLimiter(ln net.Listener, max int) *connLimiter {
	l := &connLimiter{Listener: ln, max: max, conns: map[net.Conn]connInfo{}}
	l.freed = sync.NewCond(&l.mu)
	return l
}

// Accept waits for a connection and makes room for it.
func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.conns) >= l.max {
		if victim := l.longestWaiting(); victim != nil {
			delete(l.conns, victim)
			// Not under the lock: a TLS close writes an alert. The server sees the
			// connection closed and forgets it.
			go victim.Close()
			continue
		}
		l.freed.Wait()
	}
	l.conns[c] = connInfo{since: time.Now()}
	return c, nil
}

func (l *connLimiter) longestWaiting() net.Conn {
	var victim net.Conn
	var oldest time.Time
	for c, info := range l.conns {
		if !info.busy && (victim == nil || info.since.Before(oldest)) {
			victim, oldest = c, info.since
		}
	}
	return victim
}

// track is the server's ConnState hook.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateActive, http.StateIdle:
		if _, ok := l.conns[c]; ok {
			l.conns[c] = connInfo{busy: state == http.StateActive, since: time.Now()}
		}
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
		l.freed.Signal()
	}
}

// open is how many connections the limiter holds.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// progressDeadlines lets a request's body and its response take as long as they
// need while they keep moving: each read or write pushes the connection's deadline
// bodyStall ahead. A client that stops reading or sending is cut off after
// bodyStall instead of holding its connection for ever.
func progressDeadlines(h http.Handler, stall time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		d := &deadlines{rc: rc, stall: stall}
		d.extendRead()
		d.extendWrite()
		// The server resets the read deadline for the next request, not the write.
		defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &stallReader{ReadCloser: r.Body, d: d}
		}
		h.ServeHTTP(&stallWriter{ResponseWriter: w, d: d}, r)
	})
}

type deadlines struct {
	rc    *http.ResponseController
	stall time.Duration
}

func (d *deadlines) extendRead()  { _ = d.rc.SetReadDeadline(time.Now().Add(d.stall)) }
func (d *deadlines) extendWrite() { _ = d.rc.SetWriteDeadline(time.Now().Add(d.stall)) }

type stallReader struct {
	io.ReadCloser
	d *deadlines
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		r.d.extendRead()
	}
	return n, err
}

// stallWriter keeps the ResponseWriter's optional parts that matter here: Flush,
// ReadFrom (sendfile for blobs, fed in chunks so the deadline moves), Unwrap.
type stallWriter struct {
	http.ResponseWriter
	d *deadlines
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.d.extendWrite()
	return w.ResponseWriter.Write(p)
}

func (w *stallWriter) Flush() {
	w.d.extendWrite()
	_ = w.d.rc.Flush()
}

func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// readFromChunk is how much a sendfile step may move before the deadline moves.
const readFromChunk = 4 << 20

func (w *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	var total int64
	for {
		w.d.extendWrite()
		n, err := rf.ReadFrom(io.LimitReader(src, readFromChunk))
		total += n
		if err != nil || n < readFromChunk {
			return total, err
		}
	}
}
