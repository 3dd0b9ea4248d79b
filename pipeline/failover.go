package pipeline

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
)

// Failover is an http.RoundTripper over several endpoints of one registry: the
// members of a root tier, each host:port. A request to any of them goes to the one
// in use, which changes only when it fails to connect: then the request goes to
// the next (if it is safe to send again), and so do the requests after it.
// Requests to other hosts (a token realm elsewhere, an object store) pass as they
// are.
type Failover struct {
	base   http.RoundTripper
	hosts  []string
	cur    atomic.Int64
	logger *slog.Logger
}

var _ http.RoundTripper = (*Failover)(nil)

// NewFailover fails over between hosts, over base (default http.DefaultTransport).
func NewFailover(base http.RoundTripper, hosts []string, logger *slog.Logger) *Failover {
	if base == nil {
		base = http.DefaultTransport
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Failover{base: base, hosts: slices.Clone(hosts), logger: logger}
}

// Current is the endpoint requests go to now.
func (f *Failover) Current() string { return f.hosts[f.cur.Load()%int64(len(f.hosts))] }

// RoundTrip sends req to the endpoint in use, and on to the next ones while it
// cannot connect.
func (f *Failover) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(f.hosts) == 0 || !slices.Contains(f.hosts, req.URL.Host) {
		return f.base.RoundTrip(req)
	}
	var lastErr error
	for try := range f.hosts {
		i := f.cur.Load()
		host := f.hosts[i%int64(len(f.hosts))]
		r := req.Clone(req.Context())
		r.URL.Host, r.Host = host, ""
		if try > 0 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, lastErr
			}
			r.Body = body
		}
		resp, err := f.base.RoundTrip(r)
		if err == nil {
			asAddressed(resp, host, req.URL.Host)
			return resp, nil
		}
		lastErr = err
		if req.Context().Err() != nil || !connectionError(err) {
			return nil, err
		}
		if f.cur.CompareAndSwap(i, i+1) {
			f.logger.Warn("parent endpoint failed: failing over", "from", host,
				"to", f.hosts[(i+1)%int64(len(f.hosts))], "err", err)
		}
		if !sendAgain(req, err) {
			return nil, err
		}
	}
	return nil, lastErr
}

// asAddressed makes the URLs a member put in its answer (upload locations, the
// token realm: distribution builds them from the request's Host) name the endpoint
// the client addressed, so that the client goes on talking to that one name: its
// next request fails over as this one did, and a client that accepts a token
// realm only on the registry's own host (go-containerregistry, for private
// addresses) accepts it.
func asAddressed(resp *http.Response, served, addressed string) {
	if served == addressed {
		return
	}
	for _, h := range []string{"Location", "Www-Authenticate"} {
		if v := resp.Header.Values(h); len(v) > 0 {
			for i := range v {
				v[i] = strings.ReplaceAll(v[i], "//"+served+"/", "//"+addressed+"/")
			}
		}
	}
}

// connectionError says the endpoint could not be reached or dropped the
// connection: another endpoint may do better. An HTTP answer is never one.
func connectionError(err error) bool {
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &op),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

// sendAgain says whether req may go to another endpoint after err: always when it
// never left (the dial failed); otherwise only if repeating it changes nothing
// more and its body can be read again. An upload chunk (PATCH) or an upload start
// (POST) is left to the copy's own retry.
func sendAgain(req *http.Request, err error) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}
