package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

func newRepositoryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "repository", Short: "Manage a node's repositories"}
	cmd.AddCommand(newRepositoryDeleteCmd())
	return cmd
}

func newRepositoryDeleteCmd() *cobra.Command {
	var c apiClient
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a repository: its tags, manifests and referrers, as one event",
		Example: `  outpost repository delete team/app --token "$(cat data/admin-token)"    # at the root
  outpost repository delete team/app --server http://127.0.0.1:5001 --username ci --password "$PW"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.do(cmd.Context(), http.MethodDelete, "/outpost/v1/repositories/"+args[0], nil, nil); err != nil {
				return fmt.Errorf("delete repository %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted repository %s\n", args[0])
			return nil
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	c.addLoginFlags(cmd.Flags())
	return cmd
}
