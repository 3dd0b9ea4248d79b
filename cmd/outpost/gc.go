package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
	"github.com/outpost-edge/outpost/statuspage"
)

// Garbage collection: `outpost gc` asks a node to collect now (registry/gc.go does
// the work), `serve --gc-schedule` collects on a cron schedule, and the node's status
// carries what the last collection reclaimed.

// parseGCSettings reads serve's GC options into the registry's GC configuration.
func parseGCSettings(o serveOptions, now func() time.Time) (registry.GCConfig, error) {
	cfg := registry.GCConfig{Now: now}
	if spec := strings.TrimSpace(o.GCSchedule); spec != "" {
		s, err := events.ParseSchedule(spec)
		if err != nil {
			// ParseSchedule speaks of sync schedules; say which setting is wrong.
			why := strings.TrimPrefix(err.Error(), fmt.Sprintf("%s %q: ", events.ErrSchedule, spec))
			return cfg, withHint(fmt.Errorf("gc-schedule %q: %s", spec, why),
				`--gc-schedule "0 3 * * *" (every day at 03:00), or "" for no scheduled garbage collection`)
		}
		cfg.Schedule = s
	}
	return cfg, cfg.Validate()
}

func newGCCmd() *cobra.Command {
	var (
		c      apiClient
		out    outputFlag
		dryRun bool
		last   bool
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove the blobs no manifest references any more, and reclaim their disk",
		Long: `Asks the node to collect garbage now: every blob a stored manifest references (in any
repository, through image indexes and sha512 aliases) is kept, and the others are removed
with their repository links, as are the referrers index entries of deleted manifests and
parts of interrupted copies left aside for longer than a week. Manifests are never
removed: delete images first (outpost repository delete, or a DELETE of the manifest).

Safe while pushes and replication run: a blob written, linked or named by a request
within the last hour (the grace period) is kept, so a push or a copy in progress keeps
what it needs. A node collects on its own with serve --gc-schedule.

Exit codes: 0 when the collection finished (a dry run too), 1 when it stopped early
(a storage error; the message says which), 5 when the node is unreachable, 3 for a
wrong token, 6 when another collection is running (outpost --help lists them all).`,
		Example: `  outpost gc --dry-run                         # what would go, removing nothing
  outpost gc                                   # collect now on the node at 127.0.0.1:5000
  outpost gc --last --output json              # the last collection's report, scheduled or not
  outpost gc --server http://127.0.0.1:5001 --token "$(cat /var/lib/outpost/operator-token)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if last && dryRun {
				return usage(errors.New("--last prints the last report and --dry-run runs one: give one of them"), "outpost gc --help")
			}
			method, path := http.MethodPost, "/outpost/v1/gc"
			switch {
			case last:
				method = http.MethodGet
			case dryRun:
				path += "?dry-run=true"
			}
			var ans registry.GCAnswer
			if err := c.do(cmd.Context(), method, path, nil, &ans); err != nil {
				return fmt.Errorf("gc: %w", err)
			}
			_ = out.print(cmd.OutOrStdout(), ans, func(w io.Writer) error { printGC(w, ans); return nil })
			if ans.Error != "" {
				return fmt.Errorf("gc: %s", ans.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	c.addServerFlag(f)
	c.addTokenFlag(f)
	f.BoolVar(&dryRun, "dry-run", false, "find and count what would be removed; remove nothing")
	f.BoolVar(&last, "last", false, "print the last collection's report instead of collecting now")
	out.add(f, formatTable)
	return cmd
}

func printGC(out io.Writer, ans registry.GCAnswer) {
	rep := ans.Report
	if rep == nil {
		fmt.Fprintln(out, "no garbage collection since the node started")
	} else {
		verb, lead := "removed", ""
		if rep.DryRun {
			verb, lead = "would remove", "dry run, nothing removed: "
		}
		fmt.Fprintf(out, "%s%s %d blobs (%s), %d repository links, the referrers index entries of %d deleted manifests, %d stale parts (%s): %s reclaimed in %s\n",
			lead, verb, rep.Blobs, byteCount(rep.Bytes), rep.LayerLinks, rep.ReferrerEntries, rep.Parts, byteCount(rep.PartBytes),
			byteCount(rep.Reclaimed()), rep.Finished.Sub(rep.Started).Round(time.Millisecond))
		fmt.Fprintf(out, "kept %d referenced blobs of %d manifests in %d repositories, and %d unreferenced blobs (%s) written, linked or named within the grace period\n",
			rep.Referenced, rep.Manifests, rep.Repositories, rep.Recent, byteCount(rep.RecentBytes))
		for _, w := range rep.Warnings {
			fmt.Fprintln(out, "warning:", w)
		}
		if rep.Error != "" {
			fmt.Fprintln(out, "stopped early:", rep.Error)
		}
	}
	if !ans.Next.IsZero() {
		fmt.Fprintf(out, "next scheduled collection: %s\n", ans.Next.Format(time.RFC3339))
	}
}

// byteCount is n bytes, exact, with a binary-unit reading for people.
func byteCount(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%d bytes, %s", n, statuspage.Bytes(uint64(n)))
}

// printGCStatus is `outpost status`'s line on garbage collection.
func printGCStatus(out io.Writer, gc *hierarchy.GCStatus) {
	switch {
	case gc == nil:
		return
	case gc.Finished.IsZero():
		fmt.Fprintf(out, "  gc: none since start")
	default:
		fmt.Fprintf(out, "  gc: %s reclaimed (%d blobs, the referrers index entries of %d deleted manifests, %d stale parts) at %s",
			byteCount(gc.ReclaimedBytes), gc.ReclaimedBlobs, gc.ReferrerEntries, gc.Parts, gc.Finished.Format(time.RFC3339))
		if gc.Error != "" {
			fmt.Fprintf(out, ", stopped early: %s", gc.Error)
		}
	}
	if !gc.Next.IsZero() {
		fmt.Fprintf(out, "; next %s", gc.Next.Format(time.RFC3339))
	}
	fmt.Fprintln(out)
}
