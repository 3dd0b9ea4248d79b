// Command outpost runs a node of the Outpost connected registry and manages it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		var he hinted
		if errors.As(err, &he) {
			fmt.Fprintln(os.Stderr, "Try:", he.Hint())
		}
		os.Exit(1)
	}
}

// hinted is an error that knows what the operator can do about it.
type hinted interface{ Hint() string }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "outpost",
		Short:         "A connected container registry for sites at the edge",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newEventsCmd(), newRepositoryCmd(), newNodeCmd(), newTokenCmd(), newSyncCmd(), newScrubCmd(), newStatusCmd())
	return root
}
