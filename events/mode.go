package events

import "fmt"

// Mode says whether a node accepts pushes. One type for the tree's settings
// (hierarchy) and for what a registry accepts (registry): both alias it.
type Mode string

// The two modes of a node.
const (
	ReadWrite Mode = "ReadWrite"
	ReadOnly  Mode = "ReadOnly"
)

// ParseMode accepts the mode names as written in flags, config files and settings.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ReadWrite, ReadOnly:
		return Mode(s), nil
	}
	return "", fmt.Errorf("mode %q: must be ReadWrite or ReadOnly", s)
}
