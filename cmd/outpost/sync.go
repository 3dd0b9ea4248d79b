package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

func newSyncCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sync", Short: "Control a connected node's link to its parent"}
	var c apiClient
	now := &cobra.Command{
		Use:   "now",
		Short: "Drain the link to the parent now, for one window length, whatever the schedule",
		Example: `  outpost sync now
  outpost sync now --server http://127.0.0.1:5001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.do(cmd.Context(), http.MethodPost, "/outpost/v1/sync", nil, nil); err != nil {
				return fmt.Errorf("sync now: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "syncing")
			return nil
		},
	}
	c.addServerFlag(now.Flags())
	c.addTokenFlag(now.Flags())
	cmd.AddCommand(now)
	return cmd
}
