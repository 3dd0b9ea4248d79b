package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/node"
	"github.com/outpost-edge/outpost/statuspage"
)

func newSyncCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sync", Short: "Control a connected node's link to its parent"}
	var (
		c        apiClient
		out      outputFlag
		wait     bool
		interval time.Duration
	)
	now := &cobra.Command{
		Use:   "now",
		Short: "Drain the link to the parent now, for one window length, whatever the schedule",
		Long: `Opens a connected node's link to its parent at once, for one window length, whatever
its schedule. With --wait, shows the progress on stderr (items and bytes moved, the
rate, what waits and an estimate) until nothing waits either way, then prints what
moved. Run it at the site with the site's operator token (DATA/operator-token).`,
		Example: `  outpost sync now --server http://127.0.0.1:5001 --token "$(cat data-factory1/operator-token)"
  OUTPOST_TOKEN="$(cat /var/lib/outpost/operator-token)" outpost sync now --wait
  outpost sync now --wait --output json     # progress on stderr, the summary as JSON`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if interval <= 0 {
				return usage(fmt.Errorf("--interval %s: want a positive duration", interval), "--interval 1s")
			}
			var start node.SyncProgress
			if err := c.do(cmd.Context(), http.MethodPost, "/outpost/v1/sync", nil, &start); err != nil {
				return fmt.Errorf("sync now: %w", err)
			}
			if !wait {
				return out.print(cmd.OutOrStdout(), start, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "syncing %s with %s: %s\n", start.Node, start.Parent, syncPendingText(start))
					return err
				})
			}
			last, err := waitForDrain(cmd.Context(), &c, start, interval, cmd.ErrOrStderr())
			if err != nil {
				return fmt.Errorf("sync now --wait: %w", err)
			}
			sum := summarize(start, last)
			return out.print(cmd.OutOrStdout(), sum, func(w io.Writer) error { return printSyncSummary(w, sum) })
		},
	}
	f := now.Flags()
	c.addServerFlag(f)
	c.addTokenFlag(f)
	out.add(f, formatTable)
	f.BoolVar(&wait, "wait", false, "show progress until nothing waits either way, then print what moved")
	f.DurationVar(&interval, "interval", time.Second, "with --wait, how often to ask the node")
	cmd.AddCommand(now)
	return cmd
}

// waitForDrain polls the node's sync progress until nothing waits either way,
// printing a progress line at each poll (a terminal gets it rewritten in place).
func waitForDrain(ctx context.Context, c *apiClient, start node.SyncProgress, interval time.Duration, progress io.Writer) (node.SyncProgress, error) {
	cur := start
	began := time.Now()
	for !cur.Drained() {
		select {
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-time.After(interval):
		}
		var p node.SyncProgress
		if err := c.do(ctx, http.MethodGet, "/outpost/v1/sync", nil, &p); err != nil {
			return cur, err
		}
		cur = p
		fmt.Fprintln(progress, progressLine(start, cur, time.Since(began)))
	}
	return cur, nil
}

// progressLine is one line of --wait: what moved since the start, at what rate,
// what waits, and how long the rest may take at the rate so far.
func progressLine(start, cur node.SyncProgress, elapsed time.Duration) string {
	s := summarize(start, cur)
	secs := max(elapsed.Seconds(), 0.001)
	itemRate := float64(s.Items) / secs
	line := fmt.Sprintf("%d items, %s moved (%s/s); %s", s.Items, statuspage.Bytes(s.Bytes), statuspage.Bytes(uint64(float64(s.Bytes)/secs)), syncPendingText(cur))
	if waiting := s.Waiting; waiting > 0 && itemRate > 0 {
		line += fmt.Sprintf(", about %s left", time.Duration(float64(waiting)/itemRate*float64(time.Second)).Round(time.Second))
	}
	if cur.LastError != "" {
		line += "; last error: " + cur.LastError
	}
	if !cur.WindowOpen {
		line += "; window closed"
	}
	return line
}

// syncPendingText says what waits each way.
func syncPendingText(p node.SyncProgress) string {
	var parts []string
	for _, d := range p.Directions {
		if d.PendingError != "" {
			parts = append(parts, fmt.Sprintf("%s unknown (%s)", d.Direction, d.PendingError))
			continue
		}
		parts = append(parts, fmt.Sprintf("%d waiting %s", d.PendingMessages, d.Direction))
	}
	return strings.Join(parts, ", ")
}

// syncSummary is what a `sync now --wait` moved.
type syncSummary struct {
	Node       string                 `json:"node"`
	Parent     string                 `json:"parent"`
	Took       string                 `json:"took"`
	Items      uint64                 `json:"items"`
	Bytes      uint64                 `json:"bytes"`
	CopyErrors uint64                 `json:"copyErrors"`
	Waiting    uint64                 `json:"waiting"`
	Directions []syncDirectionSummary `json:"directions"`
}

type syncDirectionSummary struct {
	Direction  string `json:"direction"`
	Items      uint64 `json:"items"`
	Bytes      uint64 `json:"bytes"`
	CopyErrors uint64 `json:"copyErrors"`
	Waiting    uint64 `json:"waiting"`
}

// summarize is the difference between two progress reports of one process (a
// counter that went back means the node restarted: its count is all since then).
func summarize(start, cur node.SyncProgress) syncSummary {
	s := syncSummary{Node: cur.Node, Parent: cur.Parent, Took: cur.Time.Sub(start.Time).Round(time.Millisecond).String()}
	before := map[string]node.DirectionProgress{}
	for _, d := range start.Directions {
		before[d.Direction] = d
	}
	diff := func(now, then uint64) uint64 {
		if now < then {
			return now
		}
		return now - then
	}
	for _, d := range cur.Directions {
		b := before[d.Direction]
		ds := syncDirectionSummary{Direction: d.Direction, Items: diff(d.AppliedMessages, b.AppliedMessages),
			Bytes: diff(d.MovedBytes, b.MovedBytes), CopyErrors: diff(d.CopyErrors, b.CopyErrors), Waiting: d.PendingMessages}
		s.Items, s.Bytes, s.CopyErrors, s.Waiting = s.Items+ds.Items, s.Bytes+ds.Bytes, s.CopyErrors+ds.CopyErrors, s.Waiting+ds.Waiting
		s.Directions = append(s.Directions, ds)
	}
	return s
}

func printSyncSummary(w io.Writer, s syncSummary) error {
	if _, err := fmt.Fprintf(w, "%s synced with %s in %s: %d items, %s moved, %d copy errors (retried)\n",
		s.Node, s.Parent, s.Took, s.Items, statuspage.Bytes(s.Bytes), s.CopyErrors); err != nil {
		return err
	}
	for _, d := range s.Directions {
		if _, err := fmt.Fprintf(w, "  %-10s %d items, %s\n", d.Direction, d.Items, statuspage.Bytes(d.Bytes)); err != nil {
			return err
		}
	}
	return nil
}
