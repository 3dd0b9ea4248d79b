package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/node"
)

// printStatus writes `outpost status` as text: the node, its link to its parent
// each way, its window, details, and its subtree.
func printStatus(out io.Writer, st node.StatusAnswer, now time.Time) {
	fmt.Fprintf(out, "%s: %s", st.Node, st.State)
	if st.Version != "" {
		fmt.Fprintf(out, " (version %s)", st.Version)
	}
	fmt.Fprintln(out)
	if p := st.Parent; p != nil {
		conn := "connected"
		if !p.Connected {
			conn = "NOT connected"
		}
		fmt.Fprintf(out, "parent %s: %s, last sync %s\n", p.Name, conn, ago(p.LastSync, now))
		if p.Upstream != nil { // none at a ReadOnly node
			fmt.Fprintf(out, "  upstream (here, for %s):   %s\n", p.Name, pendingText(p.Upstream, now))
		}
		fmt.Fprintf(out, "  downstream (at %s, for this node): %s\n", p.Name, pendingText(p.Downstream, now))
		if p.LastError != "" {
			fmt.Fprintf(out, "  last error (%s): %s\n", ago(p.LastErrorTime, now), p.LastError)
		}
		switch {
		case st.WindowOpen && st.WindowUntil.IsZero():
			fmt.Fprintln(out, "  window: open (always)")
		case st.WindowOpen:
			fmt.Fprintf(out, "  window: open until %s\n", st.WindowUntil.UTC().Format(time.RFC3339))
		case !st.NextWindowStart.IsZero():
			fmt.Fprintf(out, "  window: closed; next %s to %s\n", st.NextWindowStart.UTC().Format(time.RFC3339), st.NextWindowEnd.UTC().Format(time.RFC3339))
		default:
			fmt.Fprintln(out, "  window: closed")
		}
	}
	for _, d := range st.Details {
		fmt.Fprintf(out, "  %s (%s): %s\n", d.Code, d.Time.Format(time.RFC3339), d.Message)
	}
	if len(st.Children) == 0 {
		return
	}
	fmt.Fprintln(out, "children:")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tPARENT\tSTATE\tLAST SYNC\tWAITING FOR IT\tWAITING TO GO UP")
	for _, c := range st.Children {
		var up, down *hierarchy.LinkStatus
		for i := range c.Links {
			switch c.Links[i].Link {
			case "upstream":
				up = &c.Links[i]
			case "downstream":
				down = &c.Links[i]
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", c.Node, c.Parent, c.State, ago(c.LastSync, now), pendingText(down, now), pendingText(up, now))
	}
	_ = tw.Flush()
}

func pendingText(l *hierarchy.LinkStatus, now time.Time) string {
	if l == nil {
		return "unknown"
	}
	s := fmt.Sprintf("%d messages, %s to move", l.PendingMessages, byteCount(int64(l.PendingBytes)))
	if l.BytesPerSecond > 0 {
		s += fmt.Sprintf(" at %s/s", byteCount(int64(l.BytesPerSecond)))
		if l.PendingBytes > 0 {
			s += fmt.Sprintf(" (~%s)", (time.Duration(float64(l.PendingBytes) / l.BytesPerSecond * float64(time.Second))).Round(time.Second))
		}
	}
	if !l.AsOf.IsZero() {
		s += " as of " + ago(l.AsOf, now)
	}
	return s
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
