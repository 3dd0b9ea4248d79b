package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
)

func newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Manage the tree of nodes (at the root, with the admin token)",
	}
	cmd.AddCommand(newNodeCreateCmd(), newNodeUpdateCmd(), newNodeListCmd(), newNodeShowCmd(),
		newNodeDeleteCmd(), newNodeDeactivateCmd(), newNodeGetSettingsCmd(), newNodeResyncCmd())
	return cmd
}

// nodeFlags are the settings flags create and update share.
type nodeFlags struct {
	schedule, window, ttl, logLevel string
	bandwidth                       int64
}

func (f *nodeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.schedule, "sync-schedule", "", "5-field cron: when the link to the parent may move content (default \"* * * * *\", always)")
	cmd.Flags().StringVar(&f.window, "sync-window", "", "how long each window stays open, ISO 8601 PT1H to P7D; required with a schedule")
	cmd.Flags().StringVar(&f.ttl, "sync-message-ttl", "", "how long messages wait for the node, ISO 8601 P1D to P90D (default P2D)")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "", "the node's log level: debug, info, warn, error (default info)")
	cmd.Flags().Int64Var(&f.bandwidth, "bandwidth-limit", 0, "bytes per second of content over the link to the parent, both ways together (0: no limit)")
}

func parseDurationFlag(name, s string) (hierarchy.Duration, error) {
	d, err := events.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", name, err)
	}
	return hierarchy.Duration(d), nil
}

func newNodeCreateCmd() *cobra.Command {
	var (
		c      apiClient
		f      nodeFlags
		out    outputFlag
		parent string
		mode   string
		repos  []string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --repository R...",
		Short: "Define a node under the root or under --parent",
		Long: `Define a node under the root or under --parent. Its name is 5 to 50 letters and
digits, starting with a letter (factory1, ship42; no dashes). A node is ReadOnly unless
--mode ReadWrite (a root started with serve is ReadWrite by default).`,
		Example: `  outpost node create factory1 --mode ReadWrite --repository 'plant/*' --repository base/alpine
  outpost node create line7 --parent factory1 --repository 'plant/line7/*'
  outpost node create ship42 --repository 'fleet/*' --sync-schedule "0 2 * * *" --sync-window PT3H`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			req := hierarchy.CreateRequest{Name: args[0], Parent: parent, Settings: hierarchy.Settings{
				Mode: hierarchy.Mode(mode), SyncSchedule: f.schedule, LogLevel: f.logLevel,
				BandwidthLimit: f.bandwidth,
			}}
			for _, r := range repos {
				req.Settings.Repositories = append(req.Settings.Repositories, hierarchy.Pattern(r))
			}
			var err error
			if f.window != "" {
				if req.Settings.SyncWindow, err = parseDurationFlag("sync-window", f.window); err != nil {
					return usage(err, "")
				}
			}
			if f.ttl != "" {
				if req.Settings.MessageTTL, err = parseDurationFlag("sync-message-ttl", f.ttl); err != nil {
					return usage(err, "")
				}
			}
			var v hierarchy.NodeView
			if err := c.do(cmd.Context(), http.MethodPost, "/outpost/v1/nodes", req, &v); err != nil {
				return fmt.Errorf("create node %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, func(w io.Writer) error { return printNodeRow(w, v) })
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	f.add(cmd)
	out.add(cmd.Flags(), formatJSON)
	cmd.Flags().StringVar(&parent, "parent", "", "the parent node (default: the root)")
	cmd.Flags().StringVar(&mode, "mode", "ReadOnly", "ReadWrite or ReadOnly; ReadOnly by default, unlike serve's --mode (a root or standalone node is ReadWrite by default)")
	cmd.Flags().StringArrayVar(&repos, "repository", nil, "a repository or pattern (team/*) the node syncs; repeat for more")
	return cmd
}

func newNodeUpdateCmd() *cobra.Command {
	var (
		c            apiClient
		f            nodeFlags
		add, remove  []string
		mode, parent string
		addTokens    []string
		removeTokens []string
		anonymous    bool
		out          outputFlag
	)
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a node's settings; they reach it at its next sync",
		Example: `  outpost node update factory1 --add-repository 'tools/*' --log-level debug
  outpost node update ship42 --sync-schedule "0 */6 * * *" --sync-window PT2H
  outpost node update factory1 --add-client-tokens line1 line2 --anonymous-pull=false
  outpost node update factory1 --add-client-tokens line1,line2 --remove-client-tokens ci`,
		// Flags are parsed here, so that a token list takes every word after it
		// up to the next flag, as the example shows (pflag gives a flag one word).
		DisableFlagParsing: true,
		Args:               cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, raw []string) error {
			fl := cmd.Flags()
			expanded, err := expandListFlags(raw, "add-client-tokens", "remove-client-tokens")
			if err == nil {
				err = fl.Parse(expanded)
			}
			if err != nil {
				return usage(err, cmd.CommandPath()+" --help")
			}
			if help, _ := fl.GetBool("help"); help {
				return cmd.Help()
			}
			if err := out.check(); err != nil {
				return err
			}
			args := fl.Args()
			if len(args) != 1 {
				return usage(fmt.Errorf("node update: want one NAME, got %d (%s)", len(args), strings.Join(args, " ")),
					"outpost node update NAME --add-client-tokens a b: NAME first; a token list takes every word after it up to the next flag")
			}
			var req hierarchy.UpdateRequest
			if fl.Changed("sync-schedule") {
				req.SyncSchedule = &f.schedule
			}
			if fl.Changed("log-level") {
				req.LogLevel = &f.logLevel
			}
			if fl.Changed("bandwidth-limit") {
				req.BandwidthLimit = &f.bandwidth
			}
			if fl.Changed("sync-window") {
				d, err := parseDurationFlag("sync-window", f.window)
				if err != nil {
					return usage(err, "")
				}
				req.SyncWindow = &d
			}
			if fl.Changed("sync-message-ttl") {
				d, err := parseDurationFlag("sync-message-ttl", f.ttl)
				if err != nil {
					return usage(err, "")
				}
				req.MessageTTL = &d
			}
			if fl.Changed("mode") {
				m := hierarchy.Mode(mode)
				req.Mode = &m
			}
			if fl.Changed("parent") {
				req.Parent = &parent
			}
			for _, r := range add {
				req.AddRepositories = append(req.AddRepositories, hierarchy.Pattern(r))
			}
			for _, r := range remove {
				req.RemoveRepositories = append(req.RemoveRepositories, hierarchy.Pattern(r))
			}
			req.AddClientTokens, req.RemoveClientTokens = addTokens, removeTokens
			if fl.Changed("anonymous-pull") {
				req.AnonymousPull = &anonymous
			}
			var v hierarchy.NodeView
			if err := c.do(cmd.Context(), http.MethodPatch, "/outpost/v1/nodes/"+args[0], req, &v); err != nil {
				return fmt.Errorf("update node %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, func(w io.Writer) error { return printNodeRow(w, v) })
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	f.add(cmd)
	out.add(cmd.Flags(), formatJSON)
	cmd.Flags().StringArrayVar(&add, "add-repository", nil, "a repository or pattern to add; repeat for more")
	cmd.Flags().StringArrayVar(&remove, "remove-repository", nil, "a repository or pattern to remove; repeat for more")
	cmd.Flags().StringSliceVar(&addTokens, "add-client-tokens", nil, "client tokens that may use this node: names after it, space or comma separated, or the flag repeated")
	cmd.Flags().StringSliceVar(&removeTokens, "remove-client-tokens", nil, "client tokens that may no longer use this node (as --add-client-tokens)")
	cmd.Flags().BoolVar(&anonymous, "anonymous-pull", false, "let clients without credentials pull at this node")
	cmd.Flags().StringVar(&mode, "mode", "", "refused: a node's mode cannot change")
	cmd.Flags().StringVar(&parent, "parent", "", "refused: a node's parent cannot change")
	_ = cmd.Flags().MarkHidden("mode")
	_ = cmd.Flags().MarkHidden("parent")
	return cmd
}

func newNodeListCmd() *cobra.Command {
	var (
		c      apiClient
		parent string
		out    outputFlag
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "The whole tree (or one subtree) with each node's state",
		Example: `  outpost node list
  outpost node list --parent factory1 --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			path := "/outpost/v1/nodes"
			if parent != "" {
				path += "?parent=" + parent
			}
			var vs []hierarchy.NodeView
			if err := c.do(cmd.Context(), http.MethodGet, path, nil, &vs); err != nil {
				return fmt.Errorf("list nodes: %w", err)
			}
			return out.print(cmd.OutOrStdout(), vs, func(w io.Writer) error { return printNodeTable(w, vs) })
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	cmd.Flags().StringVar(&parent, "parent", "", "list only this node's subtree")
	out.add(cmd.Flags(), formatTable)
	return cmd
}

// printNodeRow is the table of one node, not indented by its depth.
func printNodeRow(w io.Writer, v hierarchy.NodeView) error {
	v.Depth = 1
	return printNodeTable(w, []hierarchy.NodeView{v})
}

func printNodeTable(w io.Writer, vs []hierarchy.NodeView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPARENT\tMODE\tSTATE\tLAST SYNC\tPENDING\tREPOSITORIES")
	for _, v := range vs {
		state, lastSync, pending := "Offline", "-", "-"
		if v.Status != nil {
			state = string(v.Status.State)
			if !v.Status.LastSync.IsZero() {
				lastSync = v.Status.LastSync.Local().Format(time.DateTime)
			}
			var msgs uint64
			for _, l := range v.Status.Links {
				msgs += l.PendingMessages
			}
			pending = strconv.FormatUint(msgs, 10)
		}
		repos := make([]string, len(v.Settings.Repositories))
		for i, r := range v.Settings.Repositories {
			repos[i] = string(r)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.Repeat("  ", max(v.Depth-1, 0)), v.Name,
			v.Parent, v.Settings.Mode, state, lastSync, pending, strings.Join(repos, ","))
	}
	return tw.Flush()
}

// simpleNodeCmd is a command that names one node, calls the API and prints JSON.
func simpleNodeCmd(use, short, method, action string) *cobra.Command {
	return simpleAdminCmd(use, short, method, "/outpost/v1/nodes/", action)
}

// simpleAdminCmd is a management call on one named thing, printing the answer
// (JSON by default, as it always did; table prints its fields).
func simpleAdminCmd(use, short, method, prefix, action string) *cobra.Command {
	var (
		c   apiClient
		out outputFlag
	)
	cmd := &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			path := prefix + args[0]
			if action != "" {
				path += "/" + action
			}
			var v json.RawMessage
			if err := c.do(cmd.Context(), method, path, nil, &v); err != nil {
				return fmt.Errorf("%s %s: %w", use, args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, nil)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	out.add(cmd.Flags(), formatJSON)
	return cmd
}

func newNodeShowCmd() *cobra.Command {
	var (
		c   apiClient
		out outputFlag
	)
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "One node's definition and status",
		Example: `  outpost node show factory1                 # JSON: everything the root knows
  outpost node show factory1 -o table        # its row of node list, then its status details`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			var v hierarchy.NodeView
			if err := c.do(cmd.Context(), http.MethodGet, "/outpost/v1/nodes/"+args[0], nil, &v); err != nil {
				return fmt.Errorf("show %s: %w", args[0], err)
			}
			return out.print(cmd.OutOrStdout(), v, func(w io.Writer) error {
				if err := printNodeRow(w, v); err != nil {
					return err
				}
				if v.Status == nil {
					return nil
				}
				for _, d := range v.Status.Details {
					fmt.Fprintf(w, "  %s (%s): %s\n", d.Code, d.Time.Format(time.RFC3339), d.Message)
				}
				return nil
			})
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	out.add(cmd.Flags(), formatJSON)
	return cmd
}

func newNodeDeleteCmd() *cobra.Command {
	return simpleNodeCmd("delete", "Delete a node without children", http.MethodDelete, "")
}

func newNodeDeactivateCmd() *cobra.Command {
	return simpleNodeCmd("deactivate", "Free a node definition for another process; the process running it is fenced and stops syncing", http.MethodPost, "deactivate")
}

func newNodeResyncCmd() *cobra.Command {
	return simpleNodeCmd("resync", "Make a node reconcile its whole scope at its next contact", http.MethodPost, "resync")
}

func newNodeGetSettingsCmd() *cobra.Command {
	var (
		c        apiClient
		generate int
	)
	cmd := &cobra.Command{
		Use:   "get-settings NAME",
		Short: "Print the node's connection string (one line) for `outpost serve --connection-string`",
		Example: `  outpost node get-settings factory1                      # first time: makes password 1
  outpost node get-settings factory1 --generate-password 2 # rotate: password 1 keeps working`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/outpost/v1/nodes/" + args[0] + "/settings"
			if generate != 0 {
				path += "?generatePassword=" + strconv.Itoa(generate)
			}
			var out struct {
				ConnectionString string `json:"connectionString"`
			}
			if err := c.do(cmd.Context(), http.MethodPost, path, nil, &out); err != nil {
				return fmt.Errorf("get-settings %s: %w", args[0], err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.ConnectionString)
			return nil
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	cmd.Flags().IntVar(&generate, "generate-password", 0, "make a new sync token password 1 or 2 (the other keeps working)")
	return cmd
}

// expandListFlags turns "--NAME a b c" into "--NAME=a --NAME=b --NAME=c" for the
// list flags named: the words after such a flag, up to the next one (or "--"), are
// its values. "--NAME=a,b" and a repeated flag pass through as they are.
func expandListFlags(args []string, names ...string) ([]string, error) {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...), nil
		}
		name, ok := strings.CutPrefix(a, "--")
		if !ok || !slices.Contains(names, name) {
			out = append(out, a)
			continue
		}
		j := i + 1
		for ; j < len(args) && !strings.HasPrefix(args[j], "-"); j++ {
			out = append(out, a+"="+args[j])
		}
		if j == i+1 {
			return nil, fmt.Errorf("%s: needs at least one name after it", a)
		}
		i = j - 1
	}
	return out, nil
}
