package main

import (
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"
)

func newRepositoryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "repository", Short: "Manage a node's repositories"}
	cmd.AddCommand(newRepositoryDeleteCmd())
	return cmd
}

func newRepositoryDeleteCmd() *cobra.Command {
	var (
		c   apiClient
		out outputFlag
	)
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a repository: its tags, manifests and referrers, as one event",
		Example: `  outpost repository delete team/app --token "$(cat data/admin-token)"    # at the root
  outpost repository delete team/app --server http://127.0.0.1:5001 --username ci --password "$PW"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/outpost/v1/repositories/"+args[0], nil, nil); err != nil {
				return fmt.Errorf("delete repository %s: %w", args[0], err)
			}
			v := struct {
				Repository string `json:"repository"`
				Deleted    bool   `json:"deleted"`
			}{args[0], true}
			return out.print(cmd.OutOrStdout(), v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted repository %s\n", args[0])
				return err
			})
		},
	}
	out.add(cmd.Flags(), formatTable)
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	c.addLoginFlags(cmd.Flags())
	return cmd
}
