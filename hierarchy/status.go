package hierarchy

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/notify"
)

// State is a node's connection state as its parent sees it.
type State string

// Connection states.
const (
	Online    State = "Online"
	Offline   State = "Offline"
	Syncing   State = "Syncing"
	Unhealthy State = "Unhealthy"
	// Waiting: connected, with its sync window closed.
	Waiting State = "Waiting"
	// Deactivated: the node was deactivated at the root; a process still running
	// for it is fenced.
	Deactivated State = "Deactivated"
	// Fenced: this process was replaced by another one active for the node.
	Fenced State = "Fenced"
)

// Status is what a node reports about itself; parents relay their subtree's up.
type Status struct {
	Node         string       `json:"node"`
	State        State        `json:"state"`
	LastSync     time.Time    `json:"lastSync,omitzero"`
	LastActivity time.Time    `json:"lastActivity,omitzero"`
	Links        []LinkStatus `json:"links,omitempty"`
	Details      []Detail     `json:"details,omitempty"`
	LogLevel     string       `json:"logLevel,omitempty"`
	// WindowOpen says whether the link to the parent may move content now, until
	// WindowUntil (zero: no end); while closed, the next window's bounds.
	WindowOpen      bool      `json:"windowOpen"`
	WindowUntil     time.Time `json:"windowUntil,omitzero"`
	NextWindowStart time.Time `json:"nextWindowStart,omitzero"`
	NextWindowEnd   time.Time `json:"nextWindowEnd,omitzero"`
	Repositories    Scope     `json:"repositories,omitempty"`
	Reported        time.Time `json:"reported,omitzero"` // zero: never reported
	// GC is what the node's last garbage collection reclaimed; nil before the first.
	GC *GCStatus `json:"gc,omitempty"`
	// Counters are what the node's link did since its process started (counters.go).
	Counters *LinkCounters `json:"counters,omitempty"`
	// Webhooks are the webhooks this node delivers: backlog and last error.
	Webhooks []notify.Status `json:"webhooks,omitempty"`
	// Version is the outpost build the node runs.
	Version string `json:"version,omitempty"`
}

// GCStatus is a node's last garbage collection (not a dry run) and its next.
type GCStatus struct {
	Finished        time.Time `json:"finished,omitzero"`
	ReclaimedBytes  int64     `json:"reclaimedBytes"`
	ReclaimedBlobs  int64     `json:"reclaimedBlobs"`
	ReferrerEntries int64     `json:"referrerEntries"`
	Parts           int64     `json:"parts"`
	Error           string    `json:"error,omitempty"`
	Next            time.Time `json:"next,omitzero"`
}

// LinkStatus is what waits on one link.
type LinkStatus struct {
	Link            string `json:"link"` // "upstream" or "downstream"
	PendingMessages uint64 `json:"pendingMessages"`
	// PendingBytes is the content still to move: the blobs of the queued
	// manifests that the other side lacks, as far as the sender can tell.
	PendingBytes uint64 `json:"pendingBytes"`
	// BytesPerSecond is the link's recent rate in that direction (0: idle).
	BytesPerSecond float64 `json:"bytesPerSecond,omitempty"`
	// AsOf is when the pending figures were read, when not at this report.
	AsOf time.Time `json:"asOf,omitzero"`
}

// WithDownstream sets what waits for st's node in its parent's outbox, keeping
// the rate the node reported for that direction.
func (st Status) WithDownstream(messages, bytes uint64) Status {
	links := make([]LinkStatus, 0, len(st.Links)+1)
	down := LinkStatus{Link: "downstream"}
	for _, l := range st.Links {
		if l.Link == "downstream" {
			down.BytesPerSecond = l.BytesPerSecond
			continue
		}
		links = append(links, l)
	}
	down.PendingMessages, down.PendingBytes = messages, bytes
	st.Links = append(links, down)
	return st
}

// Detail codes a node reports.
const (
	// DetailTagConflict: writes made at the node (or below it) were overwritten by
	// the parent's order; the message names the last one.
	DetailTagConflict = "TAG_CONFLICT"
)

// Detail is something an operator should know, with a code and a time.
type Detail struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// StatusStore keeps the last status of each node in the subtree.
type StatusStore struct {
	bucket *events.Bucket
}

// NewStatusStore wraps an opened bucket.
func NewStatusStore(b *events.Bucket) *StatusStore { return &StatusStore{bucket: b} }

// Put records a status.
func (s *StatusStore) Put(ctx context.Context, st Status) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.bucket.Put(ctx, st.Node, data)
}

// Get returns a node's last status; ok is false if it never reported.
func (s *StatusStore) Get(ctx context.Context, node string) (Status, bool, error) {
	data, _, err := s.bucket.Get(ctx, node)
	if errors.Is(err, events.ErrKeyNotFound) {
		return Status{}, false, nil
	}
	if err != nil {
		return Status{}, false, err
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		return Status{}, false, err
	}
	return st, true, nil
}

// All returns the statuses of the given nodes that have reported.
func (s *StatusStore) All(ctx context.Context, nodes []*Node) ([]Status, error) {
	var out []Status
	for _, n := range nodes {
		st, ok, err := s.Get(ctx, n.Name)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, st)
		}
	}
	return out, nil
}

// Delete forgets a node's status.
func (s *StatusStore) Delete(ctx context.Context, node string) error {
	return s.bucket.Delete(ctx, node)
}

// Seen ages a stored status: a node that has not reported for staleAfter is Offline.
func (st Status) Seen(now time.Time, staleAfter time.Duration) Status {
	if st.Reported.IsZero() || now.Sub(st.Reported) > staleAfter {
		st.State = Offline
	}
	return st
}
