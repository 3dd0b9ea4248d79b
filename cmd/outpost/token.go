package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/hierarchy"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage client tokens at the root: who may pull, push and delete where"}
	cmd.AddCommand(newTokenCreateCmd(), newTokenUpdateCmd(), newTokenListCmd(), newTokenShowCmd(),
		newTokenDeleteCmd(), newTokenPasswordCmd())
	return cmd
}

func parseScopeRules(rules []string) (hierarchy.ScopeMap, error) {
	var m hierarchy.ScopeMap
	for _, s := range rules {
		r, err := hierarchy.ParseScopeRule(s)
		if err != nil {
			return nil, err
		}
		m = m.Put(r)
	}
	return m, nil
}

func newTokenCreateCmd() *cobra.Command {
	var (
		c     apiClient
		rules []string
		out   outputFlag
	)
	cmd := &cobra.Command{
		Use:   "create NAME --repository REPO=ACTIONS...",
		Short: "Create a client token; its password is shown once",
		Example: `  outpost token create ci --repository 'team/*=pull,push' --repository tools/lint=pull
  outpost node update factory1 --add-client-tokens ci    # then it works at factory1 too`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			m, err := parseScopeRules(rules)
			if err != nil {
				return usage(err, "")
			}
			var v hierarchy.TokenView
			if err := c.do(cmd.Context(), http.MethodPost, "/outpost/v1/tokens", hierarchy.TokenCreateRequest{Name: args[0], Repositories: m}, &v); err != nil {
				return fmt.Errorf("create token %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, nil)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	out.add(cmd.Flags(), formatJSON)
	cmd.Flags().StringArrayVar(&rules, "repository", nil, "REPO=ACTIONS: a repository or pattern (team/*) and pull, push, delete; repeat for more")
	return cmd
}

func newTokenUpdateCmd() *cobra.Command {
	var (
		c       apiClient
		rules   []string
		remove  []string
		enabled bool
		out     outputFlag
	)
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a token's repositories or enable/disable it; nodes apply it at their next sync",
		Example: `  outpost token update ci --repository 'team/*=pull'          # replaces the rule for team/*
  outpost token update ci --remove-repository tools/lint --enabled=false`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			m, err := parseScopeRules(rules)
			if err != nil {
				return usage(err, "")
			}
			req := hierarchy.TokenUpdateRequest{Repositories: m}
			for _, p := range remove {
				req.RemoveRepositories = append(req.RemoveRepositories, hierarchy.Pattern(p))
			}
			if cmd.Flags().Changed("enabled") {
				req.Enabled = &enabled
			}
			var v hierarchy.TokenView
			if err := c.do(cmd.Context(), http.MethodPatch, "/outpost/v1/tokens/"+args[0], req, &v); err != nil {
				return fmt.Errorf("update token %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, nil)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	out.add(cmd.Flags(), formatJSON)
	cmd.Flags().StringArrayVar(&rules, "repository", nil, "REPO=ACTIONS to set (replaces that pattern's rule); repeat for more")
	cmd.Flags().StringArrayVar(&remove, "remove-repository", nil, "a pattern whose rule to drop; repeat for more")
	cmd.Flags().BoolVar(&enabled, "enabled", true, "enable or disable the token")
	return cmd
}

func newTokenListCmd() *cobra.Command {
	var (
		c   apiClient
		out outputFlag
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List client tokens, their repositories and nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			var vs []hierarchy.TokenView
			if err := c.do(cmd.Context(), http.MethodGet, "/outpost/v1/tokens", nil, &vs); err != nil {
				return fmt.Errorf("list tokens: %w", err)
			}
			return out.print(cmd.OutOrStdout(), vs, func(w io.Writer) error { return printTokenTable(w, vs) })
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	out.add(cmd.Flags(), formatTable)
	return cmd
}

func printTokenTable(w io.Writer, vs []hierarchy.TokenView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENABLED\tREPOSITORIES\tNODES")
	for _, v := range vs {
		var rules []string
		for _, r := range v.Repositories {
			rules = append(rules, string(r.Repository)+"="+strings.Join(r.Actions, ","))
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\n", v.Name, v.Enabled, strings.Join(rules, " "), strings.Join(v.Nodes, ","))
	}
	return tw.Flush()
}

func newTokenShowCmd() *cobra.Command {
	return simpleAdminCmd("show", "Show a client token (never its passwords)", http.MethodGet, "/outpost/v1/tokens/", "")
}

func newTokenDeleteCmd() *cobra.Command {
	return simpleAdminCmd("delete", "Delete a client token; nodes refuse it from their next sync", http.MethodDelete, "/outpost/v1/tokens/", "")
}

func newTokenPasswordCmd() *cobra.Command {
	var (
		c        apiClient
		generate int
		out      outputFlag
	)
	cmd := &cobra.Command{
		Use:     "password NAME --generate 1|2",
		Short:   "Make a new password 1 or 2 for a token; the other keeps working. Shown once.",
		Example: `  outpost token password ci --generate 2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if generate != 1 && generate != 2 {
				return usage(fmt.Errorf("--generate %d: must be 1 or 2", generate), "outpost token password NAME --generate 2")
			}
			var v hierarchy.TokenView
			if err := c.do(cmd.Context(), http.MethodPost, fmt.Sprintf("/outpost/v1/tokens/%s/password?generate=%d", args[0], generate), nil, &v); err != nil {
				return fmt.Errorf("token password %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, nil)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	out.add(cmd.Flags(), formatJSON)
	cmd.Flags().IntVar(&generate, "generate", 0, "which password to make: 1 or 2")
	return cmd
}
