package pipeline

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Meter counts the content bytes a link moves over its parent link and, when a
// limit is set, keeps them under it: satellite and cellular links are metered.
type Meter struct {
	moved   *prometheus.CounterVec // by direction; nil counts nothing
	limiter atomic.Pointer[rate.Limiter]
	totals  sync.Map // direction -> *atomic.Uint64, for rates (Moved)
}

// Moved is how many content bytes the meter counted in direction since it was made.
func (m *Meter) Moved(direction string) uint64 {
	if v, ok := m.totals.Load(direction); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

func (m *Meter) count(direction string, n int) {
	v, ok := m.totals.Load(direction)
	if !ok {
		v, _ = m.totals.LoadOrStore(direction, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(uint64(n))
}

// NewMeter returns an unlimited meter counting into moved (labels: direction).
func NewMeter(moved *prometheus.CounterVec) *Meter { return &Meter{moved: moved} }

// meterChunk bounds one wait on the limiter, so that a slow limit still moves
// data steadily.
const meterChunk = 32 << 10

// SetLimit sets the limit in bytes per second for both directions together; 0
// removes it.
func (m *Meter) SetLimit(bytesPerSecond int64) {
	if bytesPerSecond <= 0 {
		m.limiter.Store(nil)
		return
	}
	if l := m.limiter.Load(); l != nil && int64(l.Limit()) == bytesPerSecond {
		return
	}
	burst := int(min(bytesPerSecond, meterChunk))
	m.limiter.Store(rate.NewLimiter(rate.Limit(bytesPerSecond), burst))
}

// Transport wraps base so that request and response bodies are counted under
// direction and held to the limit.
func (m *Meter) Transport(base http.RoundTripper, direction string) http.RoundTripper {
	return meteredTransport{base: base, m: m, direction: direction}
}

type meteredTransport struct {
	base      http.RoundTripper
	m         *Meter
	direction string
}

func (t meteredTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		r = r.Clone(r.Context())
		r.Body = &meteredBody{ReadCloser: r.Body, t: t, ctx: r.Context()}
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &meteredBody{ReadCloser: resp.Body, t: t, ctx: r.Context()}
	return resp, nil
}

type meteredBody struct {
	io.ReadCloser
	t   meteredTransport
	ctx context.Context
}

func (b *meteredBody) Read(p []byte) (int, error) {
	l := b.t.m.limiter.Load()
	if l != nil && len(p) > l.Burst() {
		p = p[:l.Burst()]
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		if b.t.m.moved != nil {
			b.t.m.moved.WithLabelValues(b.t.direction).Add(float64(n))
		}
		b.t.m.count(b.t.direction, n)
		if l != nil {
			if werr := l.WaitN(b.ctx, n); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return n, err
}
