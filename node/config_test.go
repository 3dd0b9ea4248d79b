package node_test

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/node"
)

// TestRootNames: a root is named "root" or by the tree's naming rule, and a name
// refused says the rule.
func TestRootNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"root": true, "site1": true, "Factory42": true, "abcd": false, "1site": false,
		"site-1": false, strings.Repeat("a", 50): true, strings.Repeat("a", 51): false,
	} {
		cfg := node.DefaultConfig()
		cfg.Name = name
		err := cfg.Validate()
		if ok != (err == nil) {
			t.Errorf("root named %q: %v, want ok=%v", name, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), `5 to 50 letters and digits, starting with a letter (or "root")`) {
			t.Errorf("root named %q: %v, want the rule in the message", name, err)
		}
	}
}
