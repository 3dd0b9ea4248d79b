package main

import (
	"errors"
	"net"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// hinted is an error that knows what the operator can do about it; main prints
// the hint as "Try: ..." under the error.
type hinted interface{ Hint() string }

// hintError carries a recovery hint with an error, through any %w wrapping.
type hintError struct {
	err  error
	hint string
}

var _ hinted = (*hintError)(nil)

// withHint attaches what to try next to err (nil stays nil).
func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }
func (e *hintError) Hint() string  { return e.hint }

// hintFor is the hint an error carries, or one for a mistake every client command
// can make (no node at --server).
func hintFor(err error) (string, bool) {
	var h hinted
	if errors.As(err, &h) {
		return h.Hint(), true
	}
	if strings.HasPrefix(err.Error(), "unknown command") {
		return "outpost --help", true
	}
	var op *net.OpError
	var unreachable *UnreachableError
	if errors.As(err, &unreachable) && (errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial")) {
		return "is `outpost serve` running there? Name the node with --server URL or OUTPOST_SERVER (default http://127.0.0.1:5000)", true
	}
	return "", false
}

// hintUsage makes argument and flag mistakes on every command point at its help.
func hintUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usage(err, c.CommandPath()+" --help")
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(c *cobra.Command, a []string) error {
				return usage(args(c, a), "see the examples in `"+c.CommandPath()+" --help`")
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
