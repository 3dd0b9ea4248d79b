package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/events"
)

func newEventsCmd() *cobra.Command {
	var (
		server string
		last   uint64
		follow bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print a node's event log, newest last",
		Example: `  outpost events                       # the whole log of the node on 127.0.0.1:5000
  outpost events --last 20 --follow    # the newest 20, then new events as they come
  outpost events --output json --server http://127.0.0.1:5001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("output %q: want text or json", output)
			}
			q := url.Values{}
			if last > 0 {
				q.Set("last", strconv.FormatUint(last, 10))
			}
			if follow {
				q.Set("follow", "true")
			}
			u := server + "/outpost/v1/events?" + q.Encode()
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, u, nil)
			if err != nil {
				return fmt.Errorf("server %q: %w", server, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("read events from %s: %w", server, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("read events from %s: %s", server, resp.Status)
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			err = events.ReadStream(cmd.Context(), resp.Body, func(e *events.Event) error {
				if output == "json" {
					return enc.Encode(e)
				}
				_, err := fmt.Fprintln(out, e.String())
				return err
			})
			if err != nil && cmd.Context().Err() != nil {
				return nil // interrupted while following
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", envOr("OUTPOST_SERVER", "http://127.0.0.1:5000"), "the node's HTTP address (env OUTPOST_SERVER)")
	f.Uint64Var(&last, "last", 0, "print only the newest N events (0: all)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	f.StringVarP(&output, "output", "o", "text", "text or json (one event per line)")
	return cmd
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
