package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/events"
)

func newEventsCmd() *cobra.Command {
	var (
		c      apiClient
		last   uint64
		follow bool
		out    outputFlag
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print a node's event log, newest last",
		Example: `  outpost events                       # the whole log of the node on 127.0.0.1:5000
  outpost events --last 20 --follow    # the newest 20, then new events as they come
  outpost events --output json --server http://127.0.0.1:5001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			q := url.Values{}
			if last > 0 {
				q.Set("last", strconv.FormatUint(last, 10))
			}
			if follow {
				q.Set("follow", "true")
			}
			resp, err := c.send(cmd.Context(), http.MethodGet, "/outpost/v1/events?"+q.Encode(), nil)
			if err != nil {
				return fmt.Errorf("read events: %w", err)
			}
			defer resp.Body.Close()
			if d := resp.Header.Get(events.DamageHeader); d != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "Warning:", d)
			}
			w := cmd.OutOrStdout()
			enc := json.NewEncoder(w)
			err = events.ReadStream(cmd.Context(), resp.Body, func(e *events.Event) error {
				switch out.format {
				case formatJSON:
					return enc.Encode(e) // one event per line (NDJSON), for streams
				case formatYAML:
					if _, err := fmt.Fprintln(w, "---"); err != nil {
						return err
					}
					return printYAML(w, e)
				}
				_, err := fmt.Fprintln(w, e.String())
				return err
			})
			if err != nil && cmd.Context().Err() != nil {
				return nil // interrupted while following
			}
			return err
		},
	}
	f := cmd.Flags()
	c.addServerFlag(f)
	c.addTokenFlag(f)
	f.Uint64Var(&last, "last", 0, "print only the newest N events (0: all)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	out.add(f, formatTable) // json: one event per line; yaml: one document per event
	cmd.AddCommand(newEventsRepairCmd())
	return cmd
}
