package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// A full disk. Storage errors from distribution carry the server's paths in their
// answer ("filesystem: write /var/lib/...: no space left on device"), and a write
// that fills the disk to the last byte also takes JetStream's own writes down with
// it: nats-server marks a stream whose file write failed as broken until the
// process restarts. So the registry keeps a reserve: a write starts only with
// MinFreeBytes free, stops when the free space falls under it, and the client gets
// 507 with a plain message; /readyz says the disk is full until space is freed.

// ErrDiskFull is a write refused or broken off because the node's disk is full.
var ErrDiskFull = errors.New("insufficient storage: the node's disk is full")

// DefaultMinFreeBytes is the space a registry write leaves free for the event log,
// the node's buckets and its logs.
const DefaultMinFreeBytes = 64 << 20

// diskCheckEvery is how many bytes of a request body go by between two looks at
// the free space.
const diskCheckEvery = 4 << 20

// diskSpace watches the free space of the file system the storage lives on.
type diskSpace struct {
	dir     string
	minFree uint64
	health  *health
	log     *slog.Logger
	// unchecked, when set, says why there is no free space to watch (S3
	// storage): no write is refused for want of space.
	unchecked string
	// marks are strings besides dir that only an answer about the node's storage
	// holds (its S3 endpoint): such 5xx answers are replaced by a plain one.
	marks []string
}

// errNoFreeSpaceFigure is what free says when the storage has no disk to measure.
var errNoFreeSpaceFigure = errors.New("the storage has no free space figure")

func newDiskSpace(cfg *Config, h *health) *diskSpace {
	d := &diskSpace{dir: cfg.Dir, minFree: cfg.MinFreeBytes, health: h, log: cfg.Logger}
	if cfg.Storage.Driver != StorageS3 {
		return d
	}
	// The bucket has no free space to read, and content no longer fills the disk
	// the event log is on: the reserve has nothing to protect.
	d.unchecked = "storage is S3: no free-space reserve (min-free-disk) is kept, as a bucket has no free space to read and content does not fill the local disk"
	d.marks = []string{"s3aws"}
	if u, err := url.Parse(cfg.Storage.S3.Endpoint); err == nil && u.Host != "" {
		d.marks = append(d.marks, u.Host)
	}
	cfg.Logger.Info(d.unchecked)
	return d
}

// free is the space available to the node.
func (d *diskSpace) free() (uint64, error) {
	if d.unchecked != "" {
		return 0, errNoFreeSpaceFigure
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// check returns ErrDiskFull when fewer than need bytes plus the reserve are free,
// and records the state for /readyz.
func (d *diskSpace) check(need uint64) error {
	free, err := d.free()
	if err != nil {
		return nil // the write itself will say what is wrong
	}
	if free < d.minFree+need {
		d.full(free)
		return fmt.Errorf("%w (%d MiB free, %d MiB kept free for the event log)", ErrDiskFull, free>>20, d.minFree>>20)
	}
	d.health.ok("storage")
	return nil
}

// marked says whether an answer talks about the node's storage.
func (d *diskSpace) marked(body string) bool {
	for _, m := range append([]string{d.dir}, d.marks...) {
		if m != "" && strings.Contains(body, m) {
			return true
		}
	}
	return false
}

func (d *diskSpace) full(free uint64) {
	d.health.fail("storage", fmt.Errorf("%w: %d MiB free, %d MiB wanted free", ErrDiskFull, free>>20, d.minFree>>20))
}

// ready rechecks the space, so /readyz turns ready again once space is freed.
func (d *diskSpace) ready() {
	if free, err := d.free(); err == nil {
		if free < d.minFree {
			d.full(free)
		} else {
			d.health.ok("storage")
		}
	}
}

// isDiskFull recognises a storage error that means no space: ENOSPC or EDQUOT,
// wrapped or only in the text (distribution and NATS flatten errors to strings).
func isDiskFull(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, ErrDiskFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		diskFullText(err.Error())
}

func diskFullText(s string) bool {
	return strings.Contains(s, syscall.ENOSPC.Error()) || strings.Contains(s, syscall.EDQUOT.Error()) ||
		strings.Contains(s, ErrDiskFull.Error())
}

// guardDisk refuses writes while the disk is full, breaks off request bodies that
// would fill it, and turns storage failures into answers without server paths.
func (d *diskSpace) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if d.unchecked == "" && isWrite(req.Method) && req.Method != http.MethodDelete {
			if err := d.check(uint64(max(req.ContentLength, 0))); err != nil {
				writeError(w, http.StatusInsufficientStorage, codeUnknown, diskFullMessage, nil)
				return
			}
			if req.Body != nil && req.Body != http.NoBody {
				req.Body = &spaceReader{ReadCloser: req.Body, d: d}
			}
		}
		cw := &cleanErrors{ResponseWriter: w, d: d, req: req}
		if isWrite(req.Method) { // only a change publishes an event
			cw.unrecorded = &unrecorded{}
			req = req.WithContext(context.WithValue(req.Context(), unrecordedKey{}, cw.unrecorded))
		}
		next.ServeHTTP(cw, req)
		cw.finish()
	})
}

// retryAfterUnrecorded is the Retry-After, in seconds, of a change whose event
// the log did not take in time.
const retryAfterUnrecorded = "1"

const diskFullMessage = "insufficient storage: the node's disk is full; nothing of this request was kept as content, retry once space is freed"

// spaceReader breaks a request body off when the free space falls to the reserve.
type spaceReader struct {
	io.ReadCloser
	d     *diskSpace
	since int // bytes read since the last look
}

func (r *spaceReader) Read(p []byte) (int, error) {
	if r.since >= diskCheckEvery {
		r.since = 0
		if err := r.d.check(diskCheckEvery); err != nil {
			return 0, err
		}
	}
	n, err := r.ReadCloser.Read(p)
	r.since += n
	return n, err
}

// cleanErrors holds back the body of a server error answer, so that one which
// says the disk is full, or names a path of the node's storage, is replaced by a
// plain one (the original goes to the node's log).
type cleanErrors struct {
	http.ResponseWriter
	d      *diskSpace
	req    *http.Request
	status int
	held   bytes.Buffer
	// unrecorded is set when the event log did not take the request's event in time.
	unrecorded *unrecorded
}

// unrecorded notes, for one request, that its event was not recorded for a reason
// that passes (the publish's retries ran out on a JetStream leader change): the
// answer is then 503 with Retry-After, not distribution's 500.
type unrecorded struct{ err atomic.Pointer[error] }

type unrecordedKey struct{}

// markUnrecorded notes a publish that failed with a retryable error.
func markUnrecorded(ctx context.Context, err error) {
	if u, ok := ctx.Value(unrecordedKey{}).(*unrecorded); ok && events.IsRetryable(err) {
		u.err.Store(&err)
	}
}

// maxHeldError bounds what is held back of an error answer.
const maxHeldError = 64 << 10

func (c *cleanErrors) WriteHeader(code int) {
	if c.status != 0 {
		return
	}
	c.status = code
	if code < 500 {
		c.ResponseWriter.WriteHeader(code)
	}
}

func (c *cleanErrors) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.status < 500 {
		return c.ResponseWriter.Write(p)
	}
	if c.held.Len()+len(p) <= maxHeldError {
		c.held.Write(p)
	}
	return len(p), nil
}

func (c *cleanErrors) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *cleanErrors) finish() {
	if c.status < 500 {
		return
	}
	body := c.held.String()
	h := c.ResponseWriter.Header()
	switch {
	case c.unrecorded != nil && c.unrecorded.err.Load() != nil:
		c.d.log.Error("event not recorded: answered 503", "method", c.req.Method, "path", c.req.URL.Path, "err", *c.unrecorded.err.Load())
		h.Del("Content-Length")
		h.Set("Retry-After", retryAfterUnrecorded)
		writeError(c.ResponseWriter, http.StatusServiceUnavailable, codeUnavailable,
			"the node's event log did not take this change in time (its cluster is electing a leader?): try again", nil)
	case diskFullText(body):
		c.d.log.Error("storage full", "method", c.req.Method, "path", c.req.URL.Path, "answer", body)
		if free, err := c.d.free(); err == nil {
			c.d.full(free)
		}
		h.Del("Content-Length")
		writeError(c.ResponseWriter, http.StatusInsufficientStorage, codeUnknown, diskFullMessage, nil)
	case c.d.marked(body):
		c.d.log.Error("storage error", "method", c.req.Method, "path", c.req.URL.Path, "answer", body)
		h.Del("Content-Length")
		writeError(c.ResponseWriter, c.status, codeUnknown,
			"storage error at the node (logged there at "+time.Now().UTC().Format(time.RFC3339)+")", nil)
	default:
		c.ResponseWriter.WriteHeader(c.status)
		_, _ = c.ResponseWriter.Write(c.held.Bytes())
	}
}
