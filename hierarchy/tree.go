package hierarchy

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Errors the management API maps to status codes.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Tree is the set of node definitions under a root, with the rules between them.
// The root itself is not a stored node: it has no parent, syncs everything, and its
// mode is its own flag.
type Tree struct {
	Root     string
	RootMode Mode
	nodes    map[string]*Node
	// children indexes nodes by parent, each list sorted by name: Subtree of one
	// node must not sort the whole tree once per level (a root of many children).
	children map[string][]*Node
}

// NewTree builds a tree from stored definitions.
func NewTree(root string, rootMode Mode, nodes []*Node) *Tree {
	t := &Tree{Root: root, RootMode: rootMode, nodes: map[string]*Node{}, children: map[string][]*Node{}}
	for _, n := range nodes {
		t.nodes[n.Name] = n
	}
	for _, n := range t.Nodes() {
		t.children[n.Parent] = append(t.children[n.Parent], n)
	}
	return t
}

// Get returns a stored node.
func (t *Tree) Get(name string) (*Node, bool) {
	n, ok := t.nodes[name]
	return n, ok
}

// Nodes returns every stored node, sorted by name.
func (t *Tree) Nodes() []*Node {
	out := make([]*Node, 0, len(t.nodes))
	for _, n := range t.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (t *Tree) scope(name string) Scope {
	if name == t.Root {
		return Everything
	}
	return t.nodes[name].Settings.Repositories
}

func (t *Tree) mode(name string) Mode {
	if name == t.Root {
		return t.RootMode
	}
	return t.nodes[name].Settings.Mode
}

func (t *Tree) exists(name string) bool {
	_, ok := t.nodes[name]
	return ok || name == t.Root
}

// Children returns the nodes whose parent is name.
func (t *Tree) Children(name string) []*Node {
	return slices.Clone(t.children[name])
}

// Subtree returns name's descendants, parents before children.
func (t *Tree) Subtree(name string) []*Node {
	var out []*Node
	for _, c := range t.Children(name) {
		out = append(out, c)
		out = append(out, t.Subtree(c.Name)...)
	}
	return out
}

// Depth is the number of links between the root and name.
func (t *Tree) Depth(name string) int {
	d := 0
	for n, ok := t.nodes[name]; ok; n, ok = t.nodes[n.Parent] {
		d++
	}
	return d
}

// CheckCreate applies every rule to a new node (settings defaulted).
func (t *Tree) CheckCreate(n *Node) error {
	if err := ValidateName(n.Name); err != nil {
		return invalid("%v", err)
	}
	if t.exists(n.Name) {
		return fmt.Errorf("%w: node %s already exists", ErrConflict, n.Name)
	}
	if !t.exists(n.Parent) {
		return invalid("parent %q: no such node", n.Parent)
	}
	return t.checkAgainstParent(n)
}

func (t *Tree) checkAgainstParent(n *Node) error {
	if err := n.Settings.Validate(); err != nil {
		return invalid("%v", err)
	}
	if t.mode(n.Parent) == ReadOnly && n.Settings.Mode != ReadOnly {
		return invalid("mode %s: parent %s is ReadOnly, so its children must be ReadOnly", n.Settings.Mode, n.Parent)
	}
	if out := t.scope(n.Parent).Uncovered(n.Settings.Repositories); len(out) > 0 {
		return invalid("repositories %s: not within the scope of parent %s (%s)", joinPatterns(out), n.Parent, joinPatterns(t.scope(n.Parent)))
	}
	return nil
}

// CheckUpdate applies the rules to changed settings: mode and parent are fixed,
// the scope stays within the parent's and keeps holding the children's.
func (t *Tree) CheckUpdate(old, updated *Node) error {
	if updated.Settings.Mode != old.Settings.Mode {
		return invalid("mode cannot change (%s): delete the node and create it again", old.Settings.Mode)
	}
	if updated.Parent != old.Parent {
		return invalid("parent cannot change (%s)", old.Parent)
	}
	if err := t.checkAgainstParent(updated); err != nil {
		return err
	}
	for _, c := range t.Children(old.Name) {
		if out := updated.Settings.Repositories.Uncovered(c.Settings.Repositories); len(out) > 0 {
			return invalid("repositories: child %s still syncs %s; remove them there first", c.Name, joinPatterns(out))
		}
	}
	return nil
}

// CheckDelete refuses to delete a node that has children.
func (t *Tree) CheckDelete(name string) error {
	if _, ok := t.nodes[name]; !ok {
		return fmt.Errorf("%w: node %s", ErrNotFound, name)
	}
	if cs := t.Children(name); len(cs) > 0 {
		names := make([]string, len(cs))
		for i, c := range cs {
			names[i] = c.Name
		}
		return fmt.Errorf("%w: node %s has children (%s): delete them first", ErrConflict, name, strings.Join(names, ", "))
	}
	return nil
}

func joinPatterns(ps []Pattern) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}
