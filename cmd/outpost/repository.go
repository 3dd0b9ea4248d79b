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
	var server string
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a repository: its tags, manifests and referrers, as one event",
		Example: `  outpost repository delete team/app
  outpost repository delete team/app --server http://127.0.0.1:5001`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), http.MethodDelete, server+"/outpost/v1/repositories/"+args[0])
			if err != nil {
				return fmt.Errorf("delete repository %s: %w", args[0], err)
			}
			resp.Body.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "deleted repository %s\n", args[0])
			return nil
		},
	}
	addServerFlag(cmd.Flags(), &server)
	return cmd
}
