package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
)

// Integrity: the scrub of stored blobs (on demand, scheduled, and at each resync for
// the resynced scope) and the event log's damage report.

// ScrubConfig schedules and bounds the scrub of stored blobs.
type ScrubConfig struct {
	// Interval is the time between scheduled scrubs of the whole store; 0: none.
	Interval time.Duration
	registry.ScrubConfig
}

// scrubSource is where a corrupt blob is fetched again: the parent, while the link
// may move content. Without one the blob stays set aside (not served) until the
// next scrub, a copy or a resync writes it again.
func (n *Node) scrubSource() registry.BlobSource {
	switch {
	case n.link == nil:
		return nil // the root: reported only
	case !n.link.State().Open:
		return closedLink{}
	}
	return n.link
}

// closedLink is the parent while the sync window is closed: nothing moves.
type closedLink struct{}

func (closedLink) OpenBlob(context.Context, string, digest.Digest, bool) (io.ReadCloser, int64, error) {
	return nil, 0, errors.New("the link to the parent is outside its sync window: the next scrub or resync inside a window fetches it again")
}

// runScrub scrubs opts's scope and logs the outcome.
func (n *Node) runScrub(ctx context.Context, why string, opts registry.ScrubOptions) (*registry.ScrubReport, error) {
	opts.Source = n.scrubSource()
	rep, err := n.reg.Scrub(ctx, opts)
	if rep != nil {
		took := rep.Finished.Sub(rep.Started)
		n.logger.Info("scrubbed", "why", why, "blobs", rep.Blobs, "bytes", rep.Bytes, "corrupt", len(rep.Corrupt),
			"unhealed", rep.Unhealed(), "took", took.Round(time.Millisecond))
	}
	return rep, err
}

// scrubLoop scrubs the whole store every interval, counted from the last scheduled
// scrub (kept in the local bucket), so that a node restarted more often than the
// interval still scrubs.
func (n *Node) scrubLoop(ctx context.Context, every time.Duration) {
	if every <= 0 {
		return
	}
	wait := every
	if b, _, err := n.local.Get(ctx, "scrub-last"); err == nil {
		if last, err := time.Parse(time.RFC3339, string(b)); err == nil {
			wait = max(0, min(every, every-time.Since(last)))
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := n.runScrub(ctx, "scheduled", registry.ScrubOptions{})
		if err != nil && ctx.Err() == nil {
			n.logger.Error("scheduled scrub", "err", err)
		}
		if rep != nil && err == nil {
			if err := n.local.Put(ctx, "scrub-last", []byte(rep.Finished.Format(time.RFC3339))); err != nil {
				n.logger.Warn("scheduled scrub: record", "err", err)
			}
		}
		t.Reset(every)
	}
}

// verifyScope re-hashes what the node holds of the repositories in scope and
// fetches again what is bad: a resync heals blobs, not only missing tags.
func (n *Node) verifyScope(ctx context.Context, inScope func(string) bool) error {
	repos, err := n.reg.Repositories(ctx)
	if err != nil {
		return err
	}
	scope := []string{}
	for _, r := range repos {
		if inScope(r) {
			scope = append(scope, r)
		}
	}
	_, err = n.runScrub(ctx, "resync", registry.ScrubOptions{Repositories: scope})
	return err
}

// serveScrub is POST /outpost/v1/scrub (scrub now, answer the report) and GET (the
// last report and what is still set aside).
func (n *Node) serveScrub(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	var rep *registry.ScrubReport
	switch r.Method {
	case http.MethodGet:
		rep = n.reg.LastScrub()
	case http.MethodPost:
		var err error
		if rep, err = n.runScrub(r.Context(), "asked", registry.ScrubOptions{}); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "report": rep})
			return
		}
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "GET (the last scrub) or POST (scrub now)"})
		return
	}
	_ = json.NewEncoder(w).Encode(ScrubAnswer{Report: rep, Quarantined: n.reg.Quarantined()})
}

type ScrubAnswer struct {
	Report      *registry.ScrubReport  `json:"report"`
	Quarantined []registry.CorruptBlob `json:"quarantined"`
}

// integrityDetails are the status details of what is damaged at this node.
func (n *Node) integrityDetails() []hierarchy.Detail {
	var out []hierarchy.Detail
	if q := n.reg.Quarantined(); len(q) > 0 {
		var ds []string
		for _, c := range q {
			ds = append(ds, c.Digest.String())
		}
		out = append(out, hierarchy.Detail{Code: "BLOB_CORRUPT", Time: q[0].Found, Message: fmt.Sprintf(
			"%d stored blobs were found corrupt and are not served (%s): push them again or resync the node",
			len(q), strings.Join(ds, ", "))})
	}
	if d := n.log.Damage(); d != nil {
		out = append(out, hierarchy.Detail{Code: "EVENT_LOG_DAMAGED", Time: d.Found, Message: d.Error()})
	}
	return out
}
