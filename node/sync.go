package node

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// SyncProgress is where a connected node's link to its parent stands: the answer
// of GET and POST /outpost/v1/sync (`outpost sync now [--wait]`). Counts are since
// the process started; a client measures progress by their differences.
type SyncProgress struct {
	Node   string `json:"node"`
	Parent string `json:"parent"`
	// WindowOpen says whether content may move now, until WindowUntil (zero: no end).
	WindowOpen  bool      `json:"windowOpen"`
	WindowUntil time.Time `json:"windowUntil,omitzero"`
	// Directions are downstream, and upstream for a ReadWrite node.
	Directions []DirectionProgress `json:"directions"`
	// LastError is the link's last failure, cleared by the next success.
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	Time          time.Time `json:"time"`
}

// DirectionProgress is one direction of the link.
type DirectionProgress struct {
	Direction string `json:"direction"`
	// PendingMessages and PendingBytes wait in the direction's outbox (downstream:
	// this node's outbox at the parent). PendingError says why they are unknown.
	PendingMessages uint64 `json:"pendingMessages"`
	PendingBytes    uint64 `json:"pendingBytes"`
	PendingError    string `json:"pendingError,omitempty"`
	// AppliedMessages, MovedBytes (content over the link) and CopyErrors count
	// since the process started.
	AppliedMessages uint64 `json:"appliedMessages"`
	MovedBytes      uint64 `json:"movedBytes"`
	CopyErrors      uint64 `json:"copyErrors"`
	// LastSync is when the direction last found its queue drained.
	LastSync time.Time `json:"lastSync,omitzero"`
}

// Drained says whether nothing waits either way (and that is known).
func (p SyncProgress) Drained() bool {
	for _, d := range p.Directions {
		if d.PendingError != "" || d.PendingMessages > 0 {
			return false
		}
	}
	return true
}

// serveSyncNow answers /outpost/v1/sync: POST opens a connected node's link at
// once (`outpost sync now`), GET reads its progress; both answer SyncProgress.
func (n *Node) serveSyncNow(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, "GET or POST only")
		return
	}
	if n.link == nil {
		writeError(w, http.StatusBadRequest, "node "+n.name+" has no parent link to sync: sync now is for a connected node (a site), not the root")
		return
	}
	if r.Method == http.MethodPost {
		n.link.SyncNow()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(n.syncProgress(r.Context()))
}

func (n *Node) syncProgress(ctx context.Context) SyncProgress {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	ls := n.link.State()
	self := n.getSelf()
	p := SyncProgress{Node: n.name, Parent: self.Parent, WindowOpen: ls.Open, WindowUntil: ls.Until,
		LastError: ls.LastError, LastErrorTime: ls.LastErrorTime, Time: time.Now().UTC()}
	for _, dir := range linkDirections(self.Settings.Mode) {
		counts := ls.Counts(dir)
		d := DirectionProgress{Direction: dir, AppliedMessages: counts.Applied, MovedBytes: n.meter.Moved(dir),
			CopyErrors: counts.CopyErrors, LastSync: counts.Drained}
		if pend, err := n.linkPending(ctx, dir); err != nil {
			d.PendingError = err.Error()
		} else {
			d.PendingMessages, d.PendingBytes = pend.Messages, pend.Bytes
		}
		p.Directions = append(p.Directions, d)
	}
	return p
}

// writeError answers a JSON error the CLI shows as it is.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
