package hierarchy

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern selects repositories: a repository name ("team/app"), or a prefix followed by
// "*" ("team/*"), where "*" matches any rest of the name, slashes included. "*" alone
// is every repository.
type Pattern string

var patternPrefix = regexp.MustCompile(`^([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*/)*([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)?$`)

// Validate says what is wrong with a pattern.
func (p Pattern) Validate() error {
	s := string(p)
	body := strings.TrimSuffix(s, "*")
	switch {
	case s == "":
		return fmt.Errorf("repository pattern is empty")
	case strings.Count(s, "*") > 1 || (strings.Contains(s, "*") && !strings.HasSuffix(s, "*")):
		return fmt.Errorf("repository pattern %q: only one trailing * is allowed, as in team/*", s)
	case !patternPrefix.MatchString(body):
		return fmt.Errorf("repository pattern %q: lowercase letters, digits and . _ __ - separators in /-separated components", s)
	case !p.wildcard() && (body == "" || strings.HasSuffix(body, "/")):
		return fmt.Errorf("repository pattern %q: a name cannot be empty or end with /", s)
	}
	return nil
}

func (p Pattern) wildcard() bool { return strings.HasSuffix(string(p), "*") }

func (p Pattern) prefix() string { return strings.TrimSuffix(string(p), "*") }

// Matches reports whether repo is selected by p.
func (p Pattern) Matches(repo string) bool {
	if p.wildcard() {
		return strings.HasPrefix(repo, p.prefix())
	}
	return repo == string(p)
}

// covers reports whether every repository q selects is selected by p.
func (p Pattern) covers(q Pattern) bool {
	if !p.wildcard() {
		return p == q
	}
	return strings.HasPrefix(q.prefix(), p.prefix())
}

// Scope is the set of repositories a node synchronizes.
type Scope []Pattern

// Everything is the root's scope.
var Everything = Scope{"*"}

// Validate checks every pattern.
func (s Scope) Validate() error {
	if len(s) == 0 {
		return fmt.Errorf("repositories: at least one repository or pattern is required")
	}
	for _, p := range s {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Matches reports whether repo lies in the scope.
func (s Scope) Matches(repo string) bool {
	for _, p := range s {
		if p.Matches(repo) {
			return true
		}
	}
	return false
}

// Uncovered returns the patterns of child that s does not contain.
func (s Scope) Uncovered(child Scope) []Pattern {
	var out []Pattern
	for _, q := range child {
		covered := false
		for _, p := range s {
			if p.covers(q) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, q)
		}
	}
	return out
}
