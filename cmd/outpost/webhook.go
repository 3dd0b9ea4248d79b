package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/notify"
)

// envWebhookSecret may carry a webhook's secret instead of --secret-file.
const envWebhookSecret = "OUTPOST_WEBHOOK_SECRET"

func newWebhookCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "webhook", Short: "Manage webhooks at the root: who is told of pushes and deletes, and where"}
	cmd.AddCommand(newWebhookCreateCmd(), newWebhookUpdateCmd(), newWebhookListCmd(), newWebhookShowCmd(), newWebhookDeleteCmd())
	return cmd
}

// secretFlags reads a webhook's secret from a file, stdin or the environment, and
// refuses it on the command line, where every process listing shows it.
type secretFlags struct {
	file      string
	onCmdLine string
}

func (s *secretFlags) add(f *pflag.FlagSet) {
	f.StringVar(&s.file, "secret-file", "", "file holding the HMAC secret (16 to 1024 characters), - for stdin (or env "+envWebhookSecret+")")
	f.StringVar(&s.onCmdLine, "secret", "", "refused: use --secret-file or "+envWebhookSecret)
	_ = f.MarkHidden("secret")
}

// read returns the secret, or "" when none was given and required is false.
func (s *secretFlags) read(stdin io.Reader, required bool) (string, error) {
	if s.onCmdLine != "" {
		// Not echoed: it is a secret, even a refused one.
		return "", withHint(errors.New("--secret: a secret on the command line shows in every process listing and the shell's history"),
			"put it in a file (--secret-file FILE), pipe it in (--secret-file -), or set "+envWebhookSecret)
	}
	var raw []byte
	switch {
	case s.file == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 4096))
		if err != nil {
			return "", fmt.Errorf("secret from stdin: %w", err)
		}
		raw = b
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		raw = b
	default:
		v, ok := os.LookupEnv(envWebhookSecret)
		if !ok {
			if required {
				return "", withHint(errors.New("no secret: a webhook signs its notifications with one"),
					"openssl rand -hex 32 > hook.secret; then --secret-file hook.secret")
			}
			return "", nil
		}
		raw = []byte(v)
	}
	secret := strings.TrimSpace(string(raw))
	if len(secret) < notify.MinSecretLength {
		return "", fmt.Errorf("secret: %d characters, at least %d needed", len(secret), notify.MinSecretLength)
	}
	return secret, nil
}

// checkPatterns refuses a bad pattern before anything is sent.
func checkPatterns(ps []string) error {
	for _, p := range ps {
		if _, err := notify.ParsePattern(p); err != nil {
			return err
		}
	}
	return nil
}

func newWebhookCreateCmd() *cobra.Command {
	var (
		c        apiClient
		secret   secretFlags
		req      hierarchy.WebhookCreateRequest
		patterns []string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --url URL --pattern REPO:TAG[:ACTION]... --secret-file FILE",
		Short: "Define a webhook; every node in its scope notifies it of its own pushes and deletes",
		Long: `Define a webhook at the root. Each node it covers (the whole tree, or --node)
POSTs a signed CloudEvents 1.0 JSON body to URL for every push and delete made there,
by a client or by replication, that matches one of the patterns.

Patterns are ACR's: repo:tag[:action] or repo@digest[:action], * matching any run
of characters, action push, delete or * (default). Deletes of a tag, a manifest or a
repository are all "delete".

The secret signs each request: Outpost-Signature: sha256=<hex HMAC-SHA256 of
"<Outpost-Timestamp>.<body>">. It is read from a file, stdin or ` + envWebhookSecret + `,
never from the command line, and never shown again.`,
		Example: `  openssl rand -hex 32 > ci.secret
  outpost webhook create cihook --url https://ci.example.com/outpost --pattern 'hello-world:*:push' --secret-file ci.secret
  outpost webhook create ship42arrivals --node ship42 --url http://10.0.0.5:8080/hook --pattern '*:*' --secret-file - < ship42.secret`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPatterns(patterns); err != nil {
				return err
			}
			s, err := secret.read(cmd.InOrStdin(), true)
			if err != nil {
				return err
			}
			req.Name, req.Patterns, req.Secret = args[0], patterns, s
			var v notify.Webhook
			if err := c.do(cmd.Context(), http.MethodPost, "/outpost/v1/webhooks", req, &v); err != nil {
				return fmt.Errorf("create webhook %s: %w", args[0], err)
			}
			return printJSON(cmd.OutOrStdout(), v)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	secret.add(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&req.URL, "url", "", "the receiver: http or https")
	f.StringArrayVar(&patterns, "pattern", nil, "REPO:TAG[:ACTION] or REPO@DIGEST[:ACTION]; repeat for more")
	f.StringVar(&req.Node, "node", "", "only this node's changes (default: every node of the tree, each its own)")
	f.StringVar(&req.TTL, "ttl", "", "how long an event waits for the receiver before it is dropped, P1D to P90D (default P2D)")
	f.BoolVar(&req.Disabled, "disabled", false, "create it disabled")
	return cmd
}

func newWebhookUpdateCmd() *cobra.Command {
	var (
		c        apiClient
		secret   secretFlags
		url, ttl string
		patterns []string
		enabled  bool
	)
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a webhook's URL, patterns, secret, TTL, or enable/disable it",
		Example: `  outpost webhook update cihook --pattern 'hello-world:*' --pattern 'tools/*:*:push'   # replaces the patterns
  outpost webhook update cihook --enabled=false
  outpost webhook update cihook --secret-file new.secret`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPatterns(patterns); err != nil {
				return err
			}
			var req hierarchy.WebhookUpdateRequest
			s, err := secret.read(cmd.InOrStdin(), false)
			if err != nil {
				return err
			}
			if s != "" {
				req.Secret = &s
			}
			f := cmd.Flags()
			if f.Changed("url") {
				req.URL = &url
			}
			if f.Changed("ttl") {
				req.TTL = &ttl
			}
			if f.Changed("enabled") {
				req.Enabled = &enabled
			}
			req.Patterns = patterns
			var v notify.Webhook
			if err := c.do(cmd.Context(), http.MethodPatch, "/outpost/v1/webhooks/"+args[0], req, &v); err != nil {
				return fmt.Errorf("update webhook %s: %w", args[0], err)
			}
			return printJSON(cmd.OutOrStdout(), v)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	secret.add(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&url, "url", "", "the receiver: http or https")
	f.StringArrayVar(&patterns, "pattern", nil, "replace the patterns; repeat for more")
	f.StringVar(&ttl, "ttl", "", "P1D to P90D")
	f.BoolVar(&enabled, "enabled", true, "deliver (true) or keep the definition only (false)")
	return cmd
}

func newWebhookListCmd() *cobra.Command {
	var (
		c      apiClient
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List webhooks (never their secrets); each node's backlog is in its status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var vs []notify.Webhook
			if err := c.do(cmd.Context(), http.MethodGet, "/outpost/v1/webhooks", nil, &vs); err != nil {
				return fmt.Errorf("list webhooks: %w", err)
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), vs)
			case "table":
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tNODE\tENABLED\tTTL\tURL\tPATTERNS")
				for _, v := range vs {
					node := v.Node
					if node == "" {
						node = "(all)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\n", v.Name, node, v.Enabled, v.TTL, v.URL, strings.Join(v.Patterns, " "))
				}
				return tw.Flush()
			}
			return fmt.Errorf("output %q: want table or json", output)
		},
	}
	c.addServerFlag(cmd.Flags())
	c.addTokenFlag(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func newWebhookShowCmd() *cobra.Command {
	return simpleAdminCmd("show", "Show a webhook's definition (never its secret)", http.MethodGet, "/outpost/v1/webhooks/", "")
}

func newWebhookDeleteCmd() *cobra.Command {
	return simpleAdminCmd("delete", "Delete a webhook; each node drops its backlog at its next sync", http.MethodDelete, "/outpost/v1/webhooks/", "")
}

// printWebhookStatus writes the webhooks a node delivers, for `outpost status`.
func printWebhookStatus(w io.Writer, sts []notify.Status) {
	if len(sts) == 0 {
		return
	}
	fmt.Fprintln(w, "webhooks:")
	for _, st := range sts {
		state := "ok"
		switch {
		case !st.Enabled:
			state = "disabled"
		case st.Failing:
			state = fmt.Sprintf("failing since %s: %s", st.LastErrorTime.Format(time.RFC3339), st.LastError)
		case !st.LastSuccess.IsZero():
			state = "ok, last delivered " + st.LastSuccess.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  %s: %d pending, %d delivered, %d failed, %d expired since start; %s\n",
			st.Name, st.PendingMessages, st.Delivered, st.Failed, st.Expired, state)
	}
}
