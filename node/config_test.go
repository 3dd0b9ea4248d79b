package node

import (
	"strings"
	"testing"
)

func TestValidNodeName(t *testing.T) {
	for name, ok := range map[string]bool{
		"root": true, "site1": true, "Factory42": true, "abcd": false, "1site": false,
		"site-1": false, strings.Repeat("a", 50): true, strings.Repeat("a", 51): false,
	} {
		if validNodeName(name) != ok {
			t.Errorf("validNodeName(%q) = %v, want %v", name, !ok, ok)
		}
	}
}
