package hierarchy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Activation fencing. A node definition is Active for one process instance (a
// random id kept in the process's data directory). Its parent refuses every other
// instance of the node, at the gateway login, on control requests and in the
// registry: a process whose node was deactivated, or activated by another process,
// is fenced from then on, also while a new process works with the same sync token.

// Refusals a child must tell apart; each travels on the wire as its code.
var (
	// ErrAlreadyActivated refuses a second process for a node that is Active.
	ErrAlreadyActivated = errors.New("ALREADY_ACTIVATED")
	// ErrFenced refuses a process instance that is not the one active for its node:
	// another process activated the node since.
	ErrFenced = errors.New("FENCED")
	// ErrDeactivated refuses a process of a node that was deactivated at the root.
	ErrDeactivated = errors.New("DEACTIVATED")
)

// wireErrors are the refusals carried by code in a control reply.
var wireErrors = []error{ErrAlreadyActivated, ErrFenced, ErrDeactivated}

// RefusedError is a refusal the parent answered with a code: errors.Is matches
// its sentinel (ErrAlreadyActivated, ErrFenced, ErrDeactivated).
type RefusedError struct {
	Code    error
	Message string
}

func (e *RefusedError) Error() string { return e.Message }
func (e *RefusedError) Unwrap() error { return e.Code }

// codeOf is the wire code of err, "" for an error without one.
func codeOf(err error) string {
	for _, c := range wireErrors {
		if errors.Is(err, c) {
			return c.Error()
		}
	}
	return ""
}

// errorOfCode turns a coded reply back into its typed error; nil for an unknown code.
func errorOfCode(code, msg string) error {
	for _, c := range wireErrors {
		if code == c.Error() {
			return &RefusedError{Code: c, Message: msg}
		}
	}
	return nil
}

// CheckInstance says whether instance is the process active for n: nil, or why not
// (ErrDeactivated, ErrFenced). The message never shows the active instance: it is
// what tells the processes of one sync token apart.
func CheckInstance(n *Node, instance string) error {
	switch {
	case n.Activation == nil:
		return &RefusedError{Code: ErrDeactivated, Message: fmt.Sprintf(
			"DEACTIVATED: node %s was deactivated at the root, so process %s is fenced: it may not sync; "+
				"start a process for the node again to activate it", n.Name, shortInstance(instance))}
	case instance == "" || instance != n.Activation.Instance:
		return &RefusedError{Code: ErrFenced, Message: fmt.Sprintf(
			"FENCED: node %s is active in another process since %s, so process %s is fenced: it may not sync; "+
				"run `outpost node deactivate %s` at the root to run this one instead",
			n.Name, n.Activation.Time.Format(time.RFC3339), shortInstance(instance), n.Name)}
	}
	return nil
}

// shortInstance is enough of an instance id to name it in a log or a message.
func shortInstance(instance string) string {
	switch {
	case instance == "":
		return "(without an instance id)"
	case len(instance) > 8:
		return instance[:8] + "…"
	}
	return instance
}

// ActivationChanged reports whether two definitions of a node name different
// active processes.
func ActivationChanged(old, n *Node) bool {
	switch {
	case old == nil || n == nil:
		return old != n
	case old.Activation == nil || n.Activation == nil:
		return old.Activation != n.Activation
	}
	return old.Activation.Instance != n.Activation.Instance
}

// putNewer stores a copy of a node definition unless the stored one is newer (a
// definition changes only at the root, which stamps Updated): an activation a
// node relayed and recorded must not be undone by a config fetched before it. It
// reports whether the copy holds n now. A definition stored already is not written
// again: a node syncs its whole subtree every interval, and rewriting each
// definition would cost a write per node below it each time (and wake every
// watcher of the bucket).
func (s *Store) putNewer(ctx context.Context, n *Node) (bool, error) {
	for range 3 {
		cur, rev, err := s.Get(ctx, n.Name)
		switch {
		case errors.Is(err, ErrNotFound):
			err = s.Create(ctx, n)
		case err != nil:
			return false, err
		case cur.Updated.After(n.Updated):
			return false, nil
		case sameJSON(cur, n):
			return true, nil
		default:
			err = s.Update(ctx, n, rev)
		}
		if !errors.Is(err, ErrConflict) {
			return err == nil, err
		}
	}
	return false, fmt.Errorf("%w: node %s changed meanwhile", ErrConflict, n.Name)
}

// sameJSON says whether a and b are stored alike.
func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
