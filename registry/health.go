package registry

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// health remembers the last failure of each component until it next succeeds, so
// that /readyz says the node is unhealthy after, say, an event publish failed.
type health struct {
	mu       sync.Mutex
	failures map[string]failure
	now      func() time.Time
}

type failure struct {
	err  error
	time time.Time
}

func newHealth(now func() time.Time) *health {
	return &health{failures: map[string]failure{}, now: now}
}

func (h *health) fail(component string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures[component] = failure{err: err, time: h.now()}
}

func (h *health) ok(component string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failures, component)
}

// err is nil when every component's last operation succeeded.
func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failures) == 0 {
		return nil
	}
	var parts []string
	for c, f := range h.failures {
		parts = append(parts, fmt.Sprintf("%s failed at %s: %v", c, f.time.UTC().Format(time.RFC3339), f.err))
	}
	sort.Strings(parts)
	return fmt.Errorf("unhealthy: %s", strings.Join(parts, "; "))
}
