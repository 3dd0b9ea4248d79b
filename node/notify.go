package node

import (
	"context"
	"net/http"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/notify"
)

// runNotify delivers this node's events to the webhooks it holds (package notify).
func (n *Node) runNotify(ctx context.Context) {
	cfg := notify.DefaultConfig()
	cfg.Node, cfg.Conn, cfg.Log, cfg.Webhooks = n.name, n.nc, n.log, n.webhooks
	cfg.Registerer, cfg.Logger = n.metrics, n.logger
	d, err := notify.New(cfg)
	if err != nil {
		n.logger.Error("webhooks: not started", "err", err)
		return
	}
	n.notifier.Store(d)
	if err := d.Run(ctx); err != nil && ctx.Err() == nil {
		n.logger.Error("webhooks stopped", "err", err)
	}
}

// webhookStatus is the backlog and last error of each webhook this node delivers.
func (n *Node) webhookStatus(ctx context.Context) []notify.Status {
	if d := n.notifier.Load(); d != nil {
		return d.Status(ctx)
	}
	return nil
}

// mountWebhookAPI serves /outpost/v1/webhooks at the root, for the admin token.
func (n *Node) mountWebhookAPI(mux *http.ServeMux) {
	api := n.admin.AdminOnly(hierarchy.NewWebhookAPI(hierarchy.WebhookAPIConfig{Webhooks: n.webhooks, Nodes: n.nodes, Root: n.name}))
	mux.Handle("/outpost/v1/webhooks", api)
	mux.Handle("/outpost/v1/webhooks/", api)
}
