package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
)

// Integrity: the scrub of stored blobs (on demand, scheduled, and at each resync for
// the resynced scope) and the event log's damage report.

// scrubSettings are serve's scrub options, parsed.
type scrubSettings struct {
	interval time.Duration // 0: no scheduled scrub
	cfg      registry.ScrubConfig
}

func parseScrubSettings(o serveOptions) (scrubSettings, error) {
	var s scrubSettings
	var err error
	if s.interval, err = time.ParseDuration(o.ScrubInterval); err != nil || s.interval < 0 {
		return s, fmt.Errorf("scrub-interval %q: want a duration such as 24h, or 0 for none", o.ScrubInterval)
	}
	if s.cfg.BytesPerSecond, err = strconv.ParseInt(o.ScrubRate, 10, 64); err != nil {
		return s, fmt.Errorf("scrub-rate %q: want bytes per second, 0 for no cap", o.ScrubRate)
	}
	if s.cfg.Concurrency, err = strconv.Atoi(o.ScrubConcurrency); err != nil || s.cfg.Concurrency < 1 {
		return s, fmt.Errorf("scrub-concurrency %q: want 1 or more blobs at once", o.ScrubConcurrency)
	}
	return s, s.cfg.Validate()
}

// scrubSource is where a corrupt blob is fetched again: the parent, while the link
// may move content. Without one the blob stays set aside (not served) until the
// next scrub, a copy or a resync writes it again.
func (n *node) scrubSource() registry.BlobSource {
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
func (n *node) runScrub(ctx context.Context, why string, opts registry.ScrubOptions) (*registry.ScrubReport, error) {
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
func (n *node) scrubLoop(ctx context.Context, every time.Duration) {
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
func (n *node) verifyScope(ctx context.Context, inScope func(string) bool) error {
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
func (n *node) serveScrub(w http.ResponseWriter, r *http.Request) {
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
	_ = json.NewEncoder(w).Encode(scrubAnswer{Report: rep, Quarantined: n.reg.Quarantined()})
}

type scrubAnswer struct {
	Report      *registry.ScrubReport  `json:"report"`
	Quarantined []registry.CorruptBlob `json:"quarantined"`
}

// integrityDetails are the status details of what is damaged at this node.
func (n *node) integrityDetails() []hierarchy.Detail {
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

// serveStatus is GET /outpost/v1/status: this node's own status with its details,
// at the root too (whose status no parent keeps).
func (n *node) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "GET only"})
		return
	}
	_ = json.NewEncoder(w).Encode(n.selfStatus(r.Context()))
}

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
			var st hierarchy.Status
			if err := c.do(cmd.Context(), http.MethodGet, "/outpost/v1/status", nil, &st); err != nil {
				return fmt.Errorf("status: %w", err)
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				return json.NewEncoder(out).Encode(st)
			case "text":
				fmt.Fprintf(out, "%s: %s\n", st.Node, st.State)
				for _, d := range st.Details {
					fmt.Fprintf(out, "  %s (%s): %s\n", d.Code, d.Time.Format(time.RFC3339), d.Message)
				}
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
		c      apiClient
		output string
		last   bool
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
			if output != "text" && output != "json" {
				return fmt.Errorf("output %q: want text or json", output)
			}
			method := http.MethodPost
			if last {
				method = http.MethodGet
			}
			var ans scrubAnswer
			if err := c.do(cmd.Context(), method, "/outpost/v1/scrub", nil, &ans); err != nil {
				return fmt.Errorf("scrub: %w", err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				_ = json.NewEncoder(out).Encode(ans)
			} else {
				printScrub(out, ans)
			}
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
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func printScrub(out interface{ Write([]byte) (int, error) }, ans scrubAnswer) {
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
