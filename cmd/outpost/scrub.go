package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/node"
)

// Integrity commands: a node's status, the scrub of its stored blobs, and the repair
// of a damaged event log.

func newStatusCmd() *cobra.Command {
	var (
		c      apiClient
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "A node's own state and what an operator should know (details)",
		Example: `  outpost status
  outpost status --output json --server http://127.0.0.1:5001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st node.StatusAnswer
			if err := c.do(cmd.Context(), http.MethodGet, "/outpost/v1/status", nil, &st); err != nil {
				return fmt.Errorf("status: %w", err)
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				return json.NewEncoder(out).Encode(st)
			case "text":
				printStatus(out, st, time.Now())     // status.go
				printGCStatus(out, st.GC)            // gc.go
				printWebhookStatus(out, st.Webhooks) // webhook.go
				return nil
			}
			return fmt.Errorf("output %q: want text or json", output)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newScrubCmd() *cobra.Command {
	var (
		c    apiClient
		out  outputFlag
		last bool
	)
	cmd := &cobra.Command{
		Use:   "scrub",
		Short: "Check every blob a node stores against its digest, and heal or report the corrupt ones",
		Long: `Reads every stored blob back and hashes it. A blob that does not match its digest is set
aside (the node answers 404 for it instead of bad bytes); a node with a parent fetches it
again at once, so every repository linking it is healed; at the root it is reported until
a client pushes it again. Exits non-zero while a corrupt blob is not healed.`,
		Example: `  outpost scrub                                   # scrub the node on 127.0.0.1:5000 now
  outpost scrub --last --output json              # the last scrub's report, scheduled or not
  outpost scrub --server http://127.0.0.1:5001 --token "$(cat /var/lib/outpost/operator-token)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			method := http.MethodPost
			if last {
				method = http.MethodGet
			}
			var ans node.ScrubAnswer
			if err := c.do(cmd.Context(), method, "/outpost/v1/scrub", nil, &ans); err != nil {
				return fmt.Errorf("scrub: %w", err)
			}
			_ = out.print(cmd.OutOrStdout(), ans, func(w io.Writer) error { printScrub(w, ans); return nil })
			if n := len(ans.Quarantined); n > 0 {
				return fmt.Errorf("%d corrupt blobs are not healed and not served", n)
			}
			return nil
		},
	}
	f := cmd.Flags()
	c.addServerFlag(f)
	c.addTokenFlag(f)
	f.BoolVar(&last, "last", false, "print the last scrub's report instead of scrubbing now")
	out.add(f, formatTable)
	return cmd
}

func printScrub(out interface{ Write([]byte) (int, error) }, ans node.ScrubAnswer) {
	if rep := ans.Report; rep != nil {
		took := rep.Finished.Sub(rep.Started)
		fmt.Fprintf(out, "checked %d blobs, %d bytes in %s: %d corrupt\n", rep.Blobs, rep.Bytes, took.Round(time.Millisecond), len(rep.Corrupt))
		for _, c := range rep.Corrupt {
			state := "healed"
			if !c.Healed {
				state = "NOT healed: " + c.Error
			}
			fmt.Fprintf(out, "  %s %s (%s) in %s: %s\n", c.Digest, c.Problem, map[bool]string{true: "manifest", false: "blob"}[c.Manifest],
				strings.Join(c.Repositories, ", "), state)
		}
	} else {
		fmt.Fprintln(out, "no scrub since the node started")
	}
	if len(ans.Quarantined) > 0 {
		fmt.Fprintf(out, "%d blobs set aside, not served:\n", len(ans.Quarantined))
		for _, c := range ans.Quarantined {
			fmt.Fprintf(out, "  %s since %s\n", c.Digest, c.Found.Format(time.RFC3339))
		}
	}
}

func newEventsRepairCmd() *cobra.Command {
	var (
		c       apiClient
		ackLoss bool
	)
	cmd := &cobra.Command{
		Use:   "repair --ack-loss",
		Short: "Acknowledge that a damaged event log lost events, so that the node is ready again",
		Long: `A node whose event log was damaged on disk reports it at start (log, /readyz 503, status
detail EVENT_LOG_DAMAGED) and stays unhealthy. Content is intact, but the lost events may
never have reached the node's neighbours: resync them first (outpost node resync at the
root, for this node and its children), then acknowledge the loss here. If the log's
sequence went back, repair moves it past the sequences it had already used.`,
		Example: `  outpost node resync sitea --server https://root.example:5000   # at the root, first
  outpost events repair --ack-loss --server http://127.0.0.1:5001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !ackLoss {
				return errors.New("repair acknowledges that the lost events are gone: add --ack-loss")
			}
			var ans struct {
				Acknowledged *events.Damage `json:"acknowledged"`
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/outpost/v1/events/repair?ack-loss=true", nil, &ans); err != nil {
				return fmt.Errorf("repair event log: %w", err)
			}
			if ans.Acknowledged == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "the event log is not damaged: nothing to repair")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "acknowledged the loss of %d events; the event log is healthy again\n", ans.Acknowledged.Count())
			return nil
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	cmd.Flags().BoolVar(&ackLoss, "ack-loss", false, "acknowledge that the events the log lost are gone")
	return cmd
}
