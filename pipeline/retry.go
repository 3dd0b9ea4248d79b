package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Backoff spaces out attempts after failures: from an initial wait doubling up to
// a cap (each with jitter), never giving up. Safe for concurrent use. Every retry
// loop of a node uses it, with Sleep.
type Backoff struct {
	mu sync.Mutex
	b  *backoff.ExponentialBackOff
}

// NewBackoff waits initial after the first failure, doubling up to max.
func NewBackoff(initial, max time.Duration) *Backoff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = max
	b.MaxElapsedTime = 0
	b.Reset()
	return &Backoff{b: b}
}

// newRetry is a link's backoff: 200 ms doubling up to 5 s (a message leaves its
// outbox by success or by its TTL). The cap is low so that a tree converges within
// seconds of a link or a parent coming back (with 30 s a grandchild lagged half a
// minute behind its restarted parent); an attempt every 5 s per link costs little.
func newRetry() *Backoff { return NewBackoff(200*time.Millisecond, 5*time.Second) }

// Next is how long to wait before the next attempt.
func (r *Backoff) Next() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.NextBackOff()
}

// Reset starts again from the initial wait, after a success.
func (r *Backoff) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b.Reset()
}

// Sleep waits d, or less if ctx ends first.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
