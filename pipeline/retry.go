package pipeline

import (
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// retry spaces out attempts after failures: 200 ms doubling up to 5 s, never
// giving up (a message leaves its outbox by success or by its TTL). Safe for the
// copies a link runs at once. The cap is low so that a tree converges within
// seconds of a link or a parent coming back (with 30 s a grandchild lagged half a
// minute behind its restarted parent); an attempt every 5 s per link costs
// little.
type retry struct {
	mu sync.Mutex
	b  *backoff.ExponentialBackOff
}

func newRetry() *retry {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return &retry{b: b}
}

func (r *retry) next() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.NextBackOff()
}

func (r *retry) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b.Reset()
}
