package pipeline

import "sync"

// refLocks serializes the copies a node makes of one tag, whichever way they go
// (downstream, upstream, reconcile), and lets a repository delete exclude them all.
//
// A copy reads one side and then writes the other. Two copies of one tag at once
// could land in the wrong order: a reconcile that read the parent's old digest
// writing it after the event worker wrote the new one, and nothing would come to
// fix it. Held across the read and the write, the lock makes the later copy read
// what the earlier one left. Between the upstream and downstream copies of a tag
// it also keeps a write here from being replaced while it is on its way up, which
// the ledger would report as lost although it won.
type refLocks struct {
	mu    sync.Mutex
	repos map[string]*repoLock
}

type repoLock struct {
	users int
	rw    sync.RWMutex
	tags  map[string]*tagLock
}

type tagLock struct {
	users int
	mu    sync.Mutex
}

func newRefLocks() *refLocks { return &refLocks{repos: map[string]*repoLock{}} }

func (l *refLocks) repo(repo string) *repoLock {
	r, ok := l.repos[repo]
	if !ok {
		r = &repoLock{tags: map[string]*tagLock{}}
		l.repos[repo] = r
	}
	r.users++
	return r
}

func (l *refLocks) release(repo string, r *repoLock) {
	if r.users--; r.users == 0 {
		delete(l.repos, repo)
	}
}

// tag locks one tag (and the repository against deletes) and returns the unlock.
// A nil refLocks locks nothing.
func (l *refLocks) tag(repo, tag string) func() {
	if l == nil {
		return func() {}
	}
	l.mu.Lock()
	r := l.repo(repo)
	t, ok := r.tags[tag]
	if !ok {
		t = &tagLock{}
		r.tags[tag] = t
	}
	t.users++
	l.mu.Unlock()
	r.rw.RLock()
	t.mu.Lock()
	return func() {
		t.mu.Unlock()
		r.rw.RUnlock()
		l.mu.Lock()
		if t.users--; t.users == 0 {
			delete(r.tags, tag)
		}
		l.release(repo, r)
		l.mu.Unlock()
	}
}

// repository locks a whole repository (a repository delete) and returns the unlock.
func (l *refLocks) repository(repo string) func() {
	if l == nil {
		return func() {}
	}
	l.mu.Lock()
	r := l.repo(repo)
	l.mu.Unlock()
	r.rw.Lock()
	return func() {
		r.rw.Unlock()
		l.mu.Lock()
		l.release(repo, r)
		l.mu.Unlock()
	}
}
