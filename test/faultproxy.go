package test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy on 127.0.0.1 between a child and its parent that can
// break the link in the ways real links break: cut every connection, refuse new
// ones, drop a connection after N bytes, add delay, flip a byte.
type FaultProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	down      atomic.Bool
	delay     atomic.Int64 // per chunk, nanoseconds
	dropAfter atomic.Int64 // bytes toward the child per connection; 0: never
	flipAt    atomic.Int64 // flip the byte at this offset toward the child, once; 0: never
	flipped   atomic.Int64 // how many bytes were flipped
	cuts      atomic.Int64 // connections ended by Cut or DropAfter
	toChild   atomic.Int64 // bytes the parent sent toward the child

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// StartFaultProxy forwards 127.0.0.1:<port> to target until the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
	})
	return p
}

// Addr is where the child should connect.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// SetDown refuses (closes) new connections while down, and cuts the live ones.
func (p *FaultProxy) SetDown(down bool) {
	p.down.Store(down)
	if down {
		p.Cut()
	}
}

// Cut ends every live connection.
func (p *FaultProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		p.cuts.Add(1)
	}
}

// SetDelay delays every chunk forwarded.
func (p *FaultProxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// SetDropAfter ends each new connection after n bytes toward the child (0: never).
func (p *FaultProxy) SetDropAfter(n int64) { p.dropAfter.Store(n) }

// FlipOnce flips the byte at offset n of the first connection that carries that
// many bytes toward the child.
func (p *FaultProxy) FlipOnce(n int64) { p.flipAt.Store(n) }

// Flipped is how many bytes were flipped.
func (p *FaultProxy) Flipped() int64 { return p.flipped.Load() }

// Cuts is how many connections the proxy ended.
func (p *FaultProxy) Cuts() int64 { return p.cuts.Load() }

// ToChild is how many bytes the parent sent toward the child through the proxy.
func (p *FaultProxy) ToChild() int64 { return p.toChild.Load() }

func (p *FaultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			c.Close()
			continue
		}
		go p.forward(c)
	}
}

func (p *FaultProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *FaultProxy) forward(child net.Conn) {
	parent, err := net.Dial("tcp", p.target)
	if err != nil {
		child.Close()
		return
	}
	p.track(child, true)
	p.track(parent, true)
	defer func() {
		p.track(child, false)
		p.track(parent, false)
		child.Close()
		parent.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { p.pipe(parent, child, false); done <- struct{}{} }()
	go func() { p.pipe(child, parent, true); done <- struct{}{} }()
	<-done
}

// pipe copies src to dst; toChild marks the direction faults apply to.
func (p *FaultProxy) pipe(dst, src net.Conn, toChild bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if toChild {
				// Counted as the parent sent it, delivered or not: what the link carried.
				p.toChild.Add(int64(n))
				if at := p.flipAt.Load(); at > 0 && sent <= at-1 && at-1 < sent+int64(n) && p.flipAt.CompareAndSwap(at, 0) {
					chunk[at-1-sent] ^= 0xff
					p.flipped.Add(1)
				}
				if drop := p.dropAfter.Load(); drop > 0 && sent+int64(n) > drop {
					_, _ = dst.Write(chunk[:max(drop-sent, 0)])
					p.cuts.Add(1)
					return
				}
			}
			if d := p.delay.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil {
			return // EOF, or a cut
		}
	}
}
