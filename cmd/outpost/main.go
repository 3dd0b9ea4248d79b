// Command outpost runs a node of the Outpost connected registry and manages it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code (exitcode.go); an
// error is printed with its hint ("Try: ...").
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		if hint, ok := hintFor(err); ok {
			fmt.Fprintln(stderr, "Try:", hint)
		}
		return exitCode(err)
	}
	return exitOK
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "outpost",
		Short: "A connected container registry for sites at the edge",
		Long: `A connected container registry for sites at the edge.

Commands that print a resource take --output table, json or yaml. Client commands
name their node with --server (OUTPOST_SERVER) and its operator token with --token
(OUTPOST_TOKEN); every serve flag can also come from an OUTPOST_* variable
(outpost serve --help).

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newEventsCmd(), newRepositoryCmd(), newNodeCmd(), newTokenCmd(), newSyncCmd(), newScrubCmd(), newStatusCmd(), newGCCmd(), newWebhookCmd())
	addVersion(root) // version.go: --version, version, healthcheck
	hintUsage(root)
	return root
}
