package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/pipeline"
)

// Metrics an operator alerts on, per link and direction: a connected node's own
// link to its parent (outpost_link_*{direction}), and at a parent every node of
// its subtree (outpost_child_*{child}), from the statuses the subtree reports and
// the outboxes this node holds for its children. Read at scrape time, like the
// event log's size, so they cost nothing between scrapes. Counters restart at 0
// with the process that counts them.

// scrapeTimeout bounds what one scrape may wait for (the parent's outbox is one
// request away over the link).
const scrapeTimeout = 2 * time.Second

var (
	linkLabels  = []string{"direction"}
	childLabels = []string{"child"}
	childDirs   = []string{"child", "direction"}

	descLinkUp           = prometheus.NewDesc("outpost_link_up", "1 while the connection to the parent's gateway is up.", nil, nil)
	descLinkPendingMsgs  = prometheus.NewDesc("outpost_link_pending_messages", "Messages waiting on the link to the parent, by direction (downstream: in this node's outbox at the parent).", linkLabels, nil)
	descLinkPendingBytes = prometheus.NewDesc("outpost_link_pending_bytes", "Content still to move on the link to the parent, by direction: upstream the blobs of the queued images the parent lacks; downstream the size of the queued messages (what the parent holds for this node is counted there).", linkLabels, nil)
	descLinkLastSync     = prometheus.NewDesc("outpost_link_last_sync_timestamp_seconds", "When the direction last found its queue drained (Unix time).", linkLabels, nil)
	descLinkWindowOpen   = prometheus.NewDesc("outpost_link_window_open", "1 while the link's sync window is open (or `sync now` opened it).", nil, nil)
	descLinkAllowedLag   = prometheus.NewDesc("outpost_link_sync_allowed_lag_seconds", "How long the link may go without a sync under its schedule: from the start of the previous window to the end of the current or next one (0: always open).", nil, nil)
	descLinkApplied      = prometheus.NewDesc("outpost_link_messages_applied_total", "Messages applied over the link to the parent, by direction.", linkLabels, nil)
	descLinkCopyErrors   = prometheus.NewDesc("outpost_link_copy_errors_total", "Copies over the link to the parent that failed (each is retried), by direction.", linkLabels, nil)

	descChildUp           = prometheus.NewDesc("outpost_child_up", "1 while the node below reports its status (within the stale-after time).", childLabels, nil)
	descChildReported     = prometheus.NewDesc("outpost_child_last_report_timestamp_seconds", "When the node below last reported its status (Unix time).", childLabels, nil)
	descChildPendingMsgs  = prometheus.NewDesc("outpost_child_pending_messages", "Messages waiting on the node's link to its parent, by direction; downstream for a direct child is read from this node's outbox, so it counts while the child is offline.", childDirs, nil)
	descChildPendingBytes = prometheus.NewDesc("outpost_child_pending_bytes", "Content still to move on the node's link to its parent, by direction: for a direct child's downstream, the blobs of the images queued for it here; otherwise as the node reported.", childDirs, nil)
	descChildLastSync     = prometheus.NewDesc("outpost_child_last_sync_timestamp_seconds", "When the node last found its downstream queue drained (Unix time), as it reported.", childLabels, nil)
	descChildWindowOpen   = prometheus.NewDesc("outpost_child_window_open", "1 while the node's sync window is open, as it reported.", childLabels, nil)
	descChildAllowedLag   = prometheus.NewDesc("outpost_child_sync_allowed_lag_seconds", "How long the node may go without a sync under its schedule (0: always open).", childLabels, nil)
	descChildApplied      = prometheus.NewDesc("outpost_child_messages_applied_total", "Messages the node applied over its link to its parent, by direction, as it reported.", childDirs, nil)
	descChildCopyErrors   = prometheus.NewDesc("outpost_child_copy_errors_total", "Copies over the node's link to its parent that failed, by direction, as it reported.", childDirs, nil)
	descChildConflicts    = prometheus.NewDesc("outpost_child_tag_conflicts_total", "Writes made at the node or below that the parent's order overwrote, as it reported.", childLabels, nil)
)

// linkCounters are the link's counts for the node's status.
func linkCounters(ls pipeline.LinkState, ledger *pipeline.Ledger) *hierarchy.LinkCounters {
	conflicts, _ := ledger.Conflicts()
	return &hierarchy.LinkCounters{AppliedDown: ls.Down.Applied, AppliedUp: ls.Up.Applied,
		CopyErrorsDown: ls.Down.CopyErrors, CopyErrorsUp: ls.Up.CopyErrors, Conflicts: conflicts}
}

// linkCollector exports a connected node's own link.
type linkCollector struct{ n *Node }

func (c linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinkUp, descLinkPendingMsgs, descLinkPendingBytes, descLinkLastSync,
		descLinkWindowOpen, descLinkAllowedLag, descLinkApplied, descLinkCopyErrors} {
		ch <- d
	}
}

func (c linkCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	link, self := n.link, n.getSelf()
	if link == nil || self == nil {
		return // not activated yet
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descLinkUp, boolValue(n.parentConn != nil && n.parentConn.IsConnected()))
	ls := link.State()
	gauge(descLinkWindowOpen, boolValue(ls.Open))
	if w, err := pipeline.NewWindow(self.Settings.SyncSchedule, time.Duration(self.Settings.SyncWindow)); err == nil {
		if lag, ok := w.AllowedLag(n.now()); ok {
			gauge(descLinkAllowedLag, lag.Seconds())
		}
	}
	for _, dir := range linkDirections(self.Settings.Mode) {
		counts := ls.Counts(dir)
		counter(descLinkApplied, counts.Applied, dir)
		counter(descLinkCopyErrors, counts.CopyErrors, dir)
		if !counts.Drained.IsZero() {
			gauge(descLinkLastSync, unixSeconds(counts.Drained), dir)
		}
		if p, err := n.linkPending(ctx, dir); err == nil {
			gauge(descLinkPendingMsgs, float64(p.Messages), dir)
			gauge(descLinkPendingBytes, float64(p.Bytes), dir)
		}
	}
}

// linkPending reads what waits on the node's own link in direction: upstream in
// its own outbox, downstream in its outbox at the parent.
func (n *Node) linkPending(ctx context.Context, direction string) (events.Pending, error) {
	if direction == "downstream" {
		return n.link.DownstreamPending(ctx)
	}
	return n.upstreamPending(ctx) // content the parent lacks, as outpost status shows (statusview.go)
}

// childCollector exports every node below this one.
type childCollector struct{ n *Node }

func (c childCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descChildUp, descChildReported, descChildPendingMsgs, descChildPendingBytes,
		descChildLastSync, descChildWindowOpen, descChildAllowedLag, descChildApplied, descChildCopyErrors, descChildConflicts} {
		ch <- d
	}
}

func (c childCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	t, err := n.localTree(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descChildUp, err)
		return
	}
	nodes := t.Nodes()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	now := time.Now()
	for _, child := range nodes {
		if child.Name == n.name || child.Parent == "" {
			continue // this node itself (a site's list starts with it)
		}
		name := child.Name
		if w, err := pipeline.NewWindow(child.Settings.SyncSchedule, time.Duration(child.Settings.SyncWindow)); err == nil {
			if lag, ok := w.AllowedLag(now); ok {
				gauge(descChildAllowedLag, lag.Seconds(), name)
			}
		}
		st, reported, err := n.status.Get(ctx, name)
		if err != nil {
			continue
		}
		gauge(descChildUp, boolValue(reported && st.Seen(now, n.cfg.StaleAfter).State != hierarchy.Offline), name)
		if !reported {
			st = hierarchy.Status{}
		}
		if !st.Reported.IsZero() {
			gauge(descChildReported, unixSeconds(st.Reported), name)
		}
		if !st.LastSync.IsZero() {
			gauge(descChildLastSync, unixSeconds(st.LastSync), name)
		}
		if reported {
			gauge(descChildWindowOpen, boolValue(st.WindowOpen), name)
		}
		pending := map[string]hierarchy.LinkStatus{}
		for _, l := range st.Links {
			pending[l.Link] = l
		}
		if child.Parent == n.name {
			// What waits for a direct child is here: current, and there while it is offline.
			if p, err := n.childPending(ctx, name); err == nil { // content, as the status page shows
				pending["downstream"] = hierarchy.LinkStatus{Link: "downstream", PendingMessages: p.Messages, PendingBytes: p.Bytes}
			}
		}
		for dir, l := range pending {
			gauge(descChildPendingMsgs, float64(l.PendingMessages), name, dir)
			gauge(descChildPendingBytes, float64(l.PendingBytes), name, dir)
		}
		if k := st.Counters; k != nil {
			counter(descChildApplied, k.AppliedDown, name, "downstream")
			counter(descChildCopyErrors, k.CopyErrorsDown, name, "downstream")
			if child.Settings.Mode == hierarchy.ReadWrite {
				counter(descChildApplied, k.AppliedUp, name, "upstream")
				counter(descChildCopyErrors, k.CopyErrorsUp, name, "upstream")
			}
			counter(descChildConflicts, k.Conflicts, name)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// linkDirections are the directions of a node's link to its parent: downstream,
// and upstream at a ReadWrite node (a ReadOnly node sends nothing up).
func linkDirections(mode hierarchy.Mode) []string {
	if mode == hierarchy.ReadWrite {
		return []string{"downstream", "upstream"}
	}
	return []string{"downstream"}
}
