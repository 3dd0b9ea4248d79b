package statuspage

import (
	"fmt"
	"strings"
	"time"
)

// The page's data: what a Source gives it, already gathered and aged. The types
// belong here so that the page depends on nothing above it.

// Overview is the front page: the whole tree at the root, at a site the site
// itself, its parent link and its subtree.
type Overview struct {
	// Self is the node serving the page; Root says whether it is the root.
	Self string
	Root bool
	// Parent is a site's link to its parent; nil at the root.
	Parent *ParentLink
	// Nodes are the rows, parents before their children (depth-first).
	Nodes []Row
	// Note says what the page cannot show (a store that did not answer).
	Note string
}

// StateCount is how many rows are in one state.
type StateCount struct {
	State string
	Count int
}

// Summary counts the rows by state, in the order states first appear.
func (o Overview) Summary() []StateCount {
	var out []StateCount
	idx := map[string]int{}
	for _, r := range o.Nodes {
		i, ok := idx[r.State]
		if !ok {
			i = len(out)
			idx[r.State] = i
			out = append(out, StateCount{State: r.State})
		}
		out[i].Count++
	}
	return out
}

// ParentLink is a site's link to its parent, as the site sees it.
type ParentLink struct {
	Name      string
	Connected bool
	LastSync  time.Time
	LastError string
	ErrorTime time.Time
	Window    Window
	// Up waits here for the parent; Down waited there for this site at the last
	// report the parent answered (Down.AsOf).
	Up, Down Pending
}

// Row is one node.
type Row struct {
	Name, Parent string
	Depth        int
	// State: Online, Offline, Syncing, Waiting, Unhealthy, Deactivated, Fenced.
	State        string
	Mode         string
	LastSync     time.Time
	LastActivity time.Time
	Reported     time.Time
	// Up waits at the node for its parent; Down waits at its parent for it.
	Up, Down Pending
	Window   Window
	Details  []Detail
	Version  string
	// Self marks the node serving the page.
	Self bool
	// GC is the node's last garbage collection and its next; nil before either.
	GC *GC
	// Webhooks are those the node delivers, with their backlog.
	Webhooks []Webhook
}

// GC is what a node's last garbage collection reclaimed, and when the next runs.
type GC struct {
	Finished, Next time.Time
	ReclaimedBytes uint64
	ReclaimedBlobs int64
	// Error says why the last collection stopped early.
	Error string
}

// Webhook is one webhook a node delivers: its backlog and last error.
type Webhook struct {
	Name        string
	Pending     uint64
	LastSuccess time.Time
	Failing     bool
	LastError   string
}

// Window is a link's sync window.
type Window struct {
	// Known is false for the root (no link) or a node that never reported.
	Known     bool
	Open      bool
	Until     time.Time // zero: always open
	NextStart time.Time
	NextEnd   time.Time
}

// Pending is what waits on one link direction.
type Pending struct {
	Known    bool
	Messages uint64
	// Bytes is the content still to move (blobs the other side lacks).
	Bytes uint64
	// Rate is the link's recent rate in bytes per second; 0 when idle.
	Rate float64
	// AsOf is when the figures were read, when older than the page.
	AsOf time.Time
}

// Drain estimates the time to move what waits at the recent rate.
func (p Pending) Drain() string {
	switch {
	case !p.Known:
		return ""
	case p.Messages == 0 && p.Bytes == 0:
		return "drained"
	case p.Bytes == 0:
		return "metadata only"
	case p.Rate <= 0:
		return "no recent rate"
	}
	return "~" + duration(time.Duration(float64(p.Bytes)/p.Rate*float64(time.Second)))
}

// Detail is something an operator should know, with its code and a hint.
type Detail struct {
	Code    string
	Message string
	Hint    string
	Time    time.Time
}

// NodePage is one node's page: its row, its repositories and recent events.
type NodePage struct {
	Row Row
	// Scope is the repository patterns the node synchronizes.
	Scope []string
	// Repositories are those stored at the serving node in the node's scope.
	Repositories []Repository
	// Events are the serving node's recent events that concern the node.
	Events []Event
	// Where says whose registry and log the lists come from.
	Where string
	// Server is the node serving the page.
	Server string
}

// Repository is a stored repository and its tags.
type Repository struct {
	Name string
	Tags []string
}

// Event is one line of the event log.
type Event struct {
	Sequence uint64
	Time     time.Time
	Action   string
	Ref      string
	Origin   string
	From     string
}

func duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Bytes is b in binary units for people: "512 B", "2.9 KiB". The CLI prints sizes
// the same way.
func Bytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func stateClass(s string) string { return "state-" + strings.ToLower(s) }

// hints say what to do about a status detail, by code.
var hints = map[string]string{
	"LINK_ERROR":            "The last copy over the parent link failed; it is retried with backoff. Check the parent is reachable and the node's sync token is valid.",
	"SYNC_SCHEDULE_INVALID": "Fix the schedule at the root: outpost node update NAME --sync-schedule ... --sync-window ...",
	"MESSAGES_EXPIRED":      "Messages waited longer than the message TTL; the node reconciles its scope. Consider a longer --message-ttl.",
	"TAG_CONFLICT":          "Two sites wrote the same tag; the root's order decided. See the log for the digests.",
	"BLOB_CORRUPT":          "A stored blob failed its digest check. At a site it is fetched again; at the root push it again.",
	"EVENT_LOG_DAMAGED":     "Resync the neighbours (outpost node resync), then run outpost events repair --ack-loss here.",
	"DEACTIVATED":           "Deactivated at the root. Start the node's process again to activate it, or delete the node.",
	"FENCED":                "Another process is active for this node. Stop this one.",
	"UNHEALTHY":             "See /readyz at the node for the reason.",
	"GC_FAILED":             "The last garbage collection stopped early; run outpost gc at the node to see why.",
	"PARENT_UNREACHABLE":    "Check the parent's process and the network path to its gateway; the node keeps serving what it has and catches up when the link is back.",
	"OFFLINE":               "The node has not reported within the stale interval: its process is down or its link to its parent is cut.",
}

// Hint is the hint for a detail code, "" when none is known.
func Hint(code string) string { return hints[code] }
