package node

import (
	"github.com/outpost-edge/outpost/statuspage"
)

// statusPage builds the page served at `/` (package statuspage), signed in with
// the node's operator token (the admin token at the root).
func (n *Node) statusPage() (*statuspage.Page, error) {
	cfg := n.cfg.StatusPage
	cfg.Source = pageSource{n}
	cfg.Check = n.isOperator
	cfg.Secure = n.tls != nil
	cfg.Logger = n.logger
	cfg.Version = n.version()
	if cfg.Limiter == nil {
		cfg.Limiter = n.reg.LoginLimiter() // one budget with the registry's logins
	}
	return statuspage.New(cfg)
}

// version is the build this node reports (Config.Version, or the build info).
func (n *Node) version() string {
	if n.cfg.Version != "" {
		return n.cfg.Version
	}
	return statuspage.Version()
}
