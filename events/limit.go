package events

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed logins are limited per client address, at the registry and at the gateway
// alike: a burst, then one try per interval. The count is in one process's memory:
// the members of a root tier each keep their own (docs/architecture.md, "State
// shared by root members", says why).
const (
	FailedLoginBurst = 10
	FailedLoginEvery = 6 * time.Second
)

// LoginLimiter counts failed logins per client address.
type LoginLimiter struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*rate.Limiter
}

// NewLoginLimiter returns an empty limiter on the wall clock.
func NewLoginLimiter() *LoginLimiter { return NewLoginLimiterWithClock(time.Now) }

// NewLoginLimiterWithClock returns an empty limiter that reads now for its refills.
func NewLoginLimiterWithClock(now func() time.Time) *LoginLimiter {
	return &LoginLimiter{now: now, m: map[string]*rate.Limiter{}}
}

func (l *LoginLimiter) get(addr string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[addr]
	if !ok {
		if len(l.m) > 10000 {
			clear(l.m) // an address flood must not grow memory without end
		}
		lim = rate.NewLimiter(rate.Every(FailedLoginEvery), FailedLoginBurst)
		l.m[addr] = lim
	}
	return lim
}

// Limited reports whether addr has used up its failed logins, and how long to wait.
func (l *LoginLimiter) Limited(addr string) (time.Duration, bool) {
	if l.get(addr).TokensAt(l.now()) >= 1 {
		return 0, false
	}
	return FailedLoginEvery, true
}

// Failed records a failed login from addr.
func (l *LoginLimiter) Failed(addr string) { l.get(addr).AllowN(l.now(), 1) }
