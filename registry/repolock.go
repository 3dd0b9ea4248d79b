package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrRepositoryBusy is returned for a repository delete that found writes to the
// repository still under way when its wait ran out.
var ErrRepositoryBusy = errors.New("writes to the repository are still under way")

// DefaultRepositoryDeleteWait is how long a repository delete waits for the writes
// to the repository already under way.
const DefaultRepositoryDeleteWait = 30 * time.Second

// repoLocks orders a repository delete against every write to the same repository
// at this node (a manifest or tag put or delete, a blob upload request, a blob
// written in process): writes share a repository, a delete holds it alone. Without
// it a delete removing _manifests then _layers could leave a tag whose manifest or
// blob links were gone. A waiting delete goes before writes that arrive after it,
// so a steady stream of pushes cannot starve it; those writes wait no longer than
// the delete does. Only this process's writes are seen (see docs/architecture.md).
//
// The same locks, under the key <name>+manifestsKey, order a repository's manifest
// and tag deletes (alone) against its manifest and tag puts (shared).
type repoLocks struct {
	mu sync.Mutex
	m  map[string]*repoLock
}

// manifestsKey follows a repository name in the key of its manifest lock; no name
// holds a space.
const manifestsKey = " manifests"

type repoLock struct {
	writes   int           // under way
	deleting bool          // a delete holds the repository
	waiting  int           // deletes waiting
	users    int           // holders and waiters: the entry goes at zero
	changed  chan struct{} // closed, and replaced, when a holder leaves
}

// entry returns name's lock, counted as used; the caller holds l.mu.
func (l *repoLocks) entry(name string) *repoLock {
	if l.m == nil {
		l.m = map[string]*repoLock{}
	}
	e := l.m[name]
	if e == nil {
		e = &repoLock{changed: make(chan struct{})}
		l.m[name] = e
	}
	e.users++
	return e
}

// done drops one use of name's lock and wakes its waiters; the caller holds l.mu.
func (l *repoLocks) done(name string, e *repoLock) {
	close(e.changed)
	e.changed = make(chan struct{})
	if e.users--; e.users == 0 {
		delete(l.m, name)
	}
}

// write waits until no delete of name holds or waits for it, then holds name for a
// write until release is called. It waits for the context only: a delete it waits
// for gives up after its own bounded wait.
func (l *repoLocks) write(ctx context.Context, name string) (release func(), err error) {
	l.mu.Lock()
	e := l.entry(name)
	for e.deleting || e.waiting > 0 {
		ch := e.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			l.done(name, e)
			l.mu.Unlock()
			return nil, fmt.Errorf("write to %s: waiting for a repository delete: %w", name, ctx.Err())
		}
		l.mu.Lock()
	}
	e.writes++
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		e.writes--
		l.done(name, e)
		l.mu.Unlock()
	}, nil
}

// delete waits, at most wait, until no write to name or other delete of it is under
// way, then holds name alone until release is called.
func (l *repoLocks) delete(ctx context.Context, name string, wait time.Duration) (release func(), err error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	l.mu.Lock()
	e := l.entry(name)
	e.waiting++
	for e.deleting || e.writes > 0 {
		ch := e.changed
		l.mu.Unlock()
		select {
		case <-ch:
			l.mu.Lock()
			continue
		case <-ctx.Done():
			err = ctx.Err()
		case <-timer.C:
			err = fmt.Errorf("%w after %s", ErrRepositoryBusy, wait)
		}
		l.mu.Lock()
		e.waiting--
		l.done(name, e) // writes held back by this delete go on
		l.mu.Unlock()
		return nil, err
	}
	e.waiting--
	e.deleting = true
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		e.deleting = false
		l.done(name, e)
		l.mu.Unlock()
	}, nil
}
