package node

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/pipeline"
)

// validateCluster checks the root tier settings: a cluster only at a root, and
// the tier's endpoints only with a cluster.
func (c *Config) validateCluster() error {
	if c.Cluster == nil {
		if c.TierRegistry != "" || c.TierGateway != "" {
			return errors.New("tier registry/gateway endpoints: only for the members of a root tier (a cluster)")
		}
		return nil
	}
	if c.ConnectionString != "" {
		return errors.New("cluster: only root members form a cluster; a site has a connection string")
	}
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if c.TierRegistry != "" {
		if err := hierarchy.ValidateEndpoints("tier registry", c.TierRegistry); err != nil {
			return err
		}
	}
	if c.TierGateway != "" {
		if err := hierarchy.ValidateEndpoints("tier gateway", c.TierGateway); err != nil {
			return err
		}
	}
	return nil
}

// tierEndpoints replaces this member's own endpoints with the tier's where given:
// the root's children then fail over between all of them.
func (n *Node) tierEndpoints(ep hierarchy.Endpoints) hierarchy.Endpoints {
	if n.cfg.TierRegistry != "" {
		ep.Registry = n.cfg.TierRegistry
	}
	if n.cfg.TierGateway != "" {
		ep.Gateway = n.cfg.TierGateway
	}
	return ep
}

// failoverTransport moves a site's copies to another of its parent's registry
// endpoints when one fails to connect; base alone for a single endpoint.
func failoverTransport(base http.RoundTripper, hosts []string, logger *slog.Logger) http.RoundTripper {
	if len(hosts) < 2 {
		return base
	}
	return pipeline.NewFailover(base, hosts, logger)
}
