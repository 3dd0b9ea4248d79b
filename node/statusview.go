package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/statuspage"
)

// What an operator sees of a node, at the node itself: `outpost status`
// (GET /outpost/v1/status) and the status page at `/`. Everything is read from
// the node's own stores and its link, so it answers while the parent is away.

// StatusAnswer is GET /outpost/v1/status: the node's own status (its fields at
// the top level, as before), its link to its parent and its subtree.
type StatusAnswer struct {
	hierarchy.Status
	Parent *ParentLinkStatus `json:"parent,omitempty"`
	// Children is the node's subtree, parents first, each as last reported here
	// (Offline when silent), with what waits for a direct child read now.
	Children []ChildStatus `json:"children,omitempty"`
}

// ParentLinkStatus is a connected node's link to its parent.
type ParentLinkStatus struct {
	Name          string    `json:"name"`
	Connected     bool      `json:"connected"`
	LastSync      time.Time `json:"lastSync,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	// Upstream waits here for the parent (none at a ReadOnly node, which sends
	// nothing up); Downstream waited at the parent for this node when the parent
	// last answered a status report (its AsOf).
	Upstream   *hierarchy.LinkStatus `json:"upstream,omitempty"`
	Downstream *hierarchy.LinkStatus `json:"downstream,omitempty"`
}

// ChildStatus is one node below this one.
type ChildStatus struct {
	Parent string `json:"parent"`
	hierarchy.Status
}

// statusAnswer gathers the node's StatusAnswer.
func (n *Node) statusAnswer(ctx context.Context) (StatusAnswer, error) {
	ans := StatusAnswer{Status: n.selfStatus(ctx)}
	if n.connected() && n.link != nil {
		ls := n.link.State()
		p := &ParentLinkStatus{Name: n.parentName(), Connected: n.parentConn != nil && n.parentConn.IsConnected(),
			LastSync: ls.LastSync, LastError: ls.LastError, LastErrorTime: ls.LastErrorTime}
		for _, l := range ans.Links {
			if l.Link == "upstream" {
				p.Upstream = &l
			}
		}
		if n.uplink != nil {
			p.Downstream = n.uplink.LastDownstream()
		}
		ans.Parent = p
		if !p.Connected && n.fenced.Load() == nil {
			// Seen from here, as its parent sees it: cut off, whatever else holds.
			ans.State = hierarchy.Offline
			ans.Details = append(ans.Details, hierarchy.Detail{Code: "PARENT_UNREACHABLE", Time: time.Now().UTC(), Message: fmt.Sprintf(
				"no connection to parent %s's gateway %s: content waits here and at the parent until it is back", p.Name, n.cs.ParentGateway)})
		}
	}
	rows, err := n.subtreeStatuses(ctx)
	ans.Children = rows
	return ans, err
}

func (n *Node) parentName() string {
	if s := n.getSelf(); s != nil {
		return s.Parent
	}
	return ""
}

// subtreeStatuses is the last status of every node below this one, aged, with
// what waits here for each direct child read now (so an offline child shows
// it too). A deactivated node that had run shows Deactivated.
func (n *Node) subtreeStatuses(ctx context.Context) ([]ChildStatus, error) {
	t, err := n.localTree(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []ChildStatus
	for _, d := range t.Subtree(n.name) {
		st, ok, err := n.status.Get(ctx, d.Name)
		if err != nil {
			return out, err
		}
		switch {
		case !ok:
			st = hierarchy.Status{Node: d.Name, State: hierarchy.Offline}
		case d.Activation == nil:
			st.State = hierarchy.Deactivated
			st.Details = append(st.Details, hierarchy.Detail{Code: hierarchy.ErrDeactivated.Error(), Time: d.Updated,
				Message: "deactivated at the root: a process still running for this node is fenced and moves no content"})
		default:
			st = st.Seen(now, n.cfg.StaleAfter)
		}
		if d.Parent == n.name {
			if p, err := n.childPending(ctx, d.Name); err == nil {
				st = st.WithDownstream(p.Messages, p.Bytes)
			}
		}
		out = append(out, ChildStatus{Parent: d.Parent, Status: st})
	}
	return out, nil
}

// localTree is the tree this node knows: all of it at the root, its own subtree
// elsewhere; from the watched copy, not a read of every definition per request.
// Callers must not modify its nodes.
func (n *Node) localTree(ctx context.Context) (*hierarchy.Tree, error) {
	t, err := n.view.Tree(ctx)
	if err != nil {
		return nil, fmt.Errorf("node definitions: %w", err)
	}
	return t, nil
}

// childPending is what waits here for a direct child: its messages, and the
// content they will move (the child's holdings are not known here: not subtracted).
func (n *Node) childPending(ctx context.Context, child string) (events.Pending, error) {
	ob, err := n.outboxes.open(ctx, events.DownstreamOutbox(child))
	if err != nil {
		return events.Pending{}, err
	}
	p, err := n.estimator.estimate(ctx, ob, "child:"+child, nil)
	if err != nil {
		n.outboxes.forget(events.DownstreamOutbox(child))
	}
	return p, err
}

// upstreamPending is what waits here for the parent, less the blobs it has.
func (n *Node) upstreamPending(ctx context.Context) (events.Pending, error) {
	ob, err := n.outboxes.open(ctx, events.UpstreamOutbox())
	if err != nil {
		return events.Pending{}, err
	}
	has := n.parentHasBlob
	if n.parentConn == nil || !n.parentConn.IsConnected() {
		// Away: what is known from before counts; nothing is asked.
		has = func(context.Context, string, string) (bool, error) { return false, errParentAway }
	}
	p, err := n.estimator.estimate(ctx, ob, "parent", has)
	if err != nil {
		n.outboxes.forget(events.UpstreamOutbox())
	}
	return p, err
}

var errParentAway = errors.New("parent not connected")

// serveStatus is GET /outpost/v1/status: `outpost status`, at the root too
// (whose status no parent keeps).
func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "GET only"})
		return
	}
	ans, err := n.statusAnswer(r.Context())
	if err != nil {
		// What could be read is still worth showing: say what could not.
		ans.Details = append(ans.Details, hierarchy.Detail{Code: "STATUS_INCOMPLETE", Message: err.Error(), Time: time.Now().UTC()})
	}
	_ = json.NewEncoder(w).Encode(ans)
}

// The status page's source.

type pageSource struct{ n *Node }

var _ statuspage.Source = pageSource{}

func (s pageSource) Overview(ctx context.Context) (statuspage.Overview, error) {
	n := s.n
	ans, err := n.statusAnswer(ctx)
	ov := statuspage.Overview{Self: n.name, Root: !n.connected()}
	if err != nil {
		ov.Note = "Part of the tree could not be read: " + err.Error()
	}
	self := n.row(ans.Status, n.parentName(), 0, n.selfMode())
	self.Self = true
	if p := ans.Parent; p != nil {
		pl := &statuspage.ParentLink{Name: p.Name, Connected: p.Connected, LastSync: p.LastSync,
			LastError: p.LastError, ErrorTime: p.LastErrorTime, Window: self.Window, Up: pending(p.Upstream)}
		pl.Down = pending(p.Downstream)
		self.Down = pl.Down
		ov.Parent = pl
	}
	ov.Nodes = append(ov.Nodes, self)
	t, _ := n.localTree(ctx)
	base := 0
	if t != nil {
		base = t.Depth(n.name)
	}
	for _, c := range ans.Children {
		depth, mode := 1, ""
		if t != nil {
			depth = t.Depth(c.Node) - base
			if d, ok := t.Get(c.Node); ok {
				mode = string(d.Settings.Mode)
			}
		}
		ov.Nodes = append(ov.Nodes, n.row(c.Status, c.Parent, depth, mode))
	}
	return ov, nil
}

func (n *Node) selfMode() string {
	if s := n.getSelf(); s != nil {
		return string(s.Settings.Mode)
	}
	return string(n.cfg.Mode)
}

// row turns a status into a page row.
func (n *Node) row(st hierarchy.Status, parent string, depth int, mode string) statuspage.Row {
	r := statuspage.Row{Name: st.Node, Parent: parent, Depth: depth, State: string(st.State), Mode: mode,
		LastSync: st.LastSync, LastActivity: st.LastActivity, Reported: st.Reported, Version: st.Version}
	if parent != "" && !st.Reported.IsZero() && st.State != hierarchy.Offline {
		r.Window = statuspage.Window{Known: true, Open: st.WindowOpen, Until: st.WindowUntil, NextStart: st.NextWindowStart, NextEnd: st.NextWindowEnd}
	}
	for i := range st.Links {
		switch st.Links[i].Link {
		case "upstream":
			r.Up = pending(&st.Links[i])
		case "downstream":
			r.Down = pending(&st.Links[i])
		}
	}
	if g := st.GC; g != nil {
		r.GC = &statuspage.GC{Finished: g.Finished, Next: g.Next, ReclaimedBytes: uint64(max(g.ReclaimedBytes, 0)), ReclaimedBlobs: g.ReclaimedBlobs, Error: g.Error}
	}
	for _, w := range st.Webhooks {
		r.Webhooks = append(r.Webhooks, statuspage.Webhook{Name: w.Name, Pending: w.PendingMessages, LastSuccess: w.LastSuccess, Failing: w.Failing, LastError: w.LastError})
	}
	if parent != "" && st.State == hierarchy.Offline {
		r.Details = append(r.Details, statuspage.Detail{Code: "OFFLINE", Time: st.Reported, Message: offlineMessage(st.Reported)})
	}
	// A report is a child's word: a row shows a bounded part of it.
	const maxDetails, maxMessage = 8, 500
	for i, d := range st.Details {
		if i == maxDetails {
			r.Details = append(r.Details, statuspage.Detail{Code: "MORE", Message: fmt.Sprintf("%d more details: outpost status at %s", len(st.Details)-maxDetails, st.Node)})
			break
		}
		if len(d.Message) > maxMessage {
			d.Message = strings.ToValidUTF8(d.Message[:maxMessage], "") + "…"
		}
		r.Details = append(r.Details, statuspage.Detail{Code: d.Code, Message: d.Message, Time: d.Time, Hint: statuspage.Hint(d.Code)})
	}
	return r
}

func offlineMessage(reported time.Time) string {
	if reported.IsZero() {
		return "never reported"
	}
	return "last report " + reported.UTC().Format(time.RFC3339)
}

func pending(l *hierarchy.LinkStatus) statuspage.Pending {
	if l == nil {
		return statuspage.Pending{}
	}
	return statuspage.Pending{Known: true, Messages: l.PendingMessages, Bytes: l.PendingBytes, Rate: l.BytesPerSecond, AsOf: l.AsOf}
}

func (s pageSource) Node(ctx context.Context, name string) (statuspage.NodePage, error) {
	n := s.n
	ov, err := s.Overview(ctx)
	if err != nil {
		return statuspage.NodePage{}, err
	}
	np := statuspage.NodePage{Server: n.name}
	found := false
	for _, r := range ov.Nodes {
		if r.Name == name {
			np.Row, found = r, true
		}
	}
	if !found {
		return np, statuspage.ErrUnknownNode
	}
	match := func(string) bool { return true }
	if t, err := n.localTree(ctx); err == nil {
		if d, ok := t.Get(name); ok {
			for _, p := range d.Settings.Repositories {
				np.Scope = append(np.Scope, string(p))
			}
			match = d.Settings.Repositories.Matches
		}
	}
	np.Where = "Repositories stored and events recorded at " + n.name + "."
	if name != n.name {
		np.Where = "Repositories stored and events recorded at " + n.name + " in " + name + "'s scope (what it has or is being sent)."
	}
	np.Repositories, err = n.storedRepositories(ctx, match, 200)
	if err != nil {
		np.Where += " Repositories could not be listed: " + err.Error()
	}
	np.Events = n.recentEvents(ctx, func(e *events.Event) bool {
		return name == n.name || match(e.Repository) || e.Origin == name || e.From == name
	}, 50)
	return np, nil
}

// storedRepositories lists the node's repositories that match, with tags.
func (n *Node) storedRepositories(ctx context.Context, match func(string) bool, max int) ([]statuspage.Repository, error) {
	names, err := n.reg.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	var out []statuspage.Repository
	for _, name := range names {
		if !match(name) || len(out) >= max {
			continue
		}
		tags, _ := n.ownTags(ctx, name)
		out = append(out, statuspage.Repository{Name: name, Tags: tags})
	}
	return out, nil
}

// recentEvents is the newest events of the node's log that keep, newest first.
func (n *Node) recentEvents(ctx context.Context, keep func(*events.Event) bool, max int) []statuspage.Event {
	var all []statuspage.Event
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := n.log.Read(rctx, events.ReadOptions{Last: 500}, func(e *events.Event) error {
		if keep(e) {
			ref := e.Repository
			if e.Tag != "" {
				ref += ":" + e.Tag
			}
			if e.Digest != "" {
				ref += "@" + e.Digest
			}
			all = append(all, statuspage.Event{Sequence: e.Sequence, Time: e.Time, Action: string(e.Action), Ref: ref, Origin: e.Origin, From: e.From})
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		n.logger.Debug("status page: events", "err", err)
	}
	slices.Reverse(all)
	if len(all) > max {
		all = all[:max]
	}
	return all
}
