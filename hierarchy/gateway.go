package hierarchy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/notify"
)

// Activator activates a node: the root's Manager does it, a connected node forwards
// the request to its parent.
type Activator interface {
	Activate(ctx context.Context, node, instance string, ep Endpoints) (*Node, error)
}

var (
	_ Activator                 = (*Manager)(nil)
	_ Activator                 = (*Uplink)(nil)
	_ events.ChildAuthenticator = (*Gateway)(nil)
)

// Gateway answers a node's children: it checks their sync tokens at login and serves
// their control requests (activation, settings for their subtree, status reports).
type Gateway struct {
	self      string
	nodes     *Store // this node's subtree, or the whole tree at the root
	view      *WatchedNodes
	stopView  context.CancelFunc
	tokens    *TokenStore
	webhooks  *WebhookStore
	status    *StatusStore
	activator Activator
	pending   func(ctx context.Context, child string) (events.Pending, error)
	log       *slog.Logger
	nc        *nats.Conn
	sub       *nats.Subscription
	fenceSub  *nats.Subscription
	// disconnect closes a child's connections whose instance keep refuses.
	disconnect func(user string, keep func(instance string) bool) int

	logins *loginCache

	// Control requests are served by up to controlWorkers goroutines: one request
	// at a time (a subscription's handler) held every child's sync behind each
	// request's round trips to a tier's other members.
	workers  chan struct{}
	mu       sync.Mutex // guards stopped and inflight.Add against Stop
	stopped  bool
	inflight sync.WaitGroup
}

// controlWorkers is how many control requests a gateway serves at once. At a root
// tier each costs a few round trips to the buckets' leaders and an R3 write: served
// one at a time, 400 children's syncs (200 requests a second) outran them, and
// children's status reports timed out (292 of 942 in a fan-out run).
const controlWorkers = 32

// loginCacheTTL is how long a verified password is trusted without bcrypt. A new or
// removed password takes effect at once: the cache is keyed by the stored hashes.
const loginCacheTTL = time.Minute

// GatewayConfig configures a Gateway.
type GatewayConfig struct {
	Self  string
	Conn  *nats.Conn // the node's own connection to its NATS server
	Nodes *Store
	// View is a watched copy of Nodes (WatchNodes) the gateway answers control
	// requests from; nil: the gateway starts its own.
	View      *WatchedNodes
	Tokens    *TokenStore
	Status    *StatusStore
	Activator Activator
	// Pending reads what waits in a child's outbox here, for its status.
	Pending func(ctx context.Context, child string) (events.Pending, error)
	Logger  *slog.Logger
	// Disconnect closes the gateway connections of a child's sync token whose process
	// instance keep refuses (events.Server.DisconnectChild). Optional.
	Disconnect func(user string, keep func(instance string) bool) int
	// Webhooks are the definitions sent down with the config (webhooks.go); nil
	// sends none.
	Webhooks *WebhookStore
}

// StartGateway subscribes to the children's control requests, in a queue group: when
// several root members share one NATS cluster, one of them answers each request.
func StartGateway(cfg GatewayConfig) (*Gateway, error) {
	g := &Gateway{self: cfg.Self, nodes: cfg.Nodes, tokens: cfg.Tokens, status: cfg.Status, activator: cfg.Activator,
		pending: cfg.Pending, log: cfg.Logger, logins: newLoginCache(loginCacheTTL), disconnect: cfg.Disconnect, nc: cfg.Conn,
		view: cfg.View, stopView: func() {}, workers: make(chan struct{}, controlWorkers)}
	if g.view == nil {
		ctx, cancel := context.WithCancel(context.Background())
		view, err := WatchNodes(ctx, cfg.Nodes, cfg.Self)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		g.view, g.stopView = view, cancel
	}
	g.webhooks = cfg.Webhooks // webhooks.go
	sub, err := cfg.Conn.QueueSubscribe(events.ControlSubscription, events.ControlQueue, g.handle)
	if err != nil {
		g.stopView()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.sub = sub
	// Not a queue: every member closes the connections it holds.
	if g.fenceSub, err = cfg.Conn.Subscribe(events.FenceSubscription, g.handleFence); err != nil {
		_ = sub.Unsubscribe()
		g.stopView()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return g, nil
}

// Stop ends the subscriptions and waits for the requests being served.
func (g *Gateway) Stop() {
	_ = g.sub.Unsubscribe()
	_ = g.fenceSub.Unsubscribe()
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.inflight.Wait()
	g.stopView()
}

// FenceTier has every member of this node's tier (this one included) fence node:
// a child's stale process may be connected to any of them. Called by the root's
// Manager after an activation or a deactivation.
func (g *Gateway) FenceTier(ctx context.Context, node string) {
	if err := g.nc.Publish(events.FenceSubject(node), nil); err != nil {
		g.log.Warn("fence not sent to the other members; fencing here only", "node", node, "err", err)
		g.Fence(ctx, node)
		return
	}
	_ = g.nc.FlushWithContext(ctx)
}

func (g *Gateway) handleFence(m *nats.Msg) {
	node := strings.TrimPrefix(m.Subject, strings.TrimSuffix(events.FenceSubscription, "*"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.Fence(ctx, node)
}

// AuthenticateChild accepts the sync token of a direct child; only the process
// instance active for it may drain its outbox.
func (g *Gateway) AuthenticateChild(user, password, instance string) (events.ChildLogin, bool) {
	name, ok := strings.CutSuffix(user, "-sync")
	if !ok {
		return events.ChildLogin{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, _, err := g.nodes.Get(ctx, name)
	known := err == nil && n.Parent == g.self
	var pws Passwords // an unknown child costs a check too: no telling it from a wrong password
	if known {
		pws = n.SyncToken
	}
	if !g.logins.verify(user, pws, password) || !known {
		// A child defined moments ago is known here only after this node's next sync.
		g.log.Warn("sync token refused: unknown child of this node or wrong password", "user", user)
		return events.ChildLogin{}, false
	}
	if err := CheckInstance(n, instance); err != nil {
		// A process about to activate logs in so too: not a warning in itself.
		g.log.Info("gateway login of a process not active for its node: control requests only", "user", user, "reason", err)
		return events.ChildLogin{Child: name}, true
	}
	return events.ChildLogin{Child: name, Active: true}, true
}

// Fence closes the gateway connections of node's processes that are not the one
// active for it now (deactivated, or replaced): a pull in progress stops, and they
// log in again as what they are. Called when a node's activation changes here.
func (g *Gateway) Fence(ctx context.Context, node string) {
	if g.disconnect == nil {
		return
	}
	n, _, err := g.nodes.Get(ctx, node)
	if err != nil || n.Parent != g.self {
		return // not a child of this node: its parent fences it
	}
	if closed := g.disconnect(SyncTokenName(node), func(instance string) bool { return CheckInstance(n, instance) == nil }); closed > 0 {
		g.log.Warn("closed gateway connections of fenced processes", "node", node, "connections", closed)
	}
}

// replyError answers a refusal, with its code when a child must tell it apart.
func replyError(err error) controlReply { return controlReply{Error: err.Error(), Code: codeOf(err)} }

type controlReply struct {
	Error  string         `json:"error,omitempty"`
	Code   string         `json:"code,omitempty"`
	Nodes  []*Node        `json:"nodes,omitempty"`
	Tokens []*ClientToken `json:"tokens,omitempty"`
	// Webhooks the subtree delivers or relays (webhooks.go); nil from a parent
	// that keeps none.
	Webhooks []*notify.Webhook `json:"webhooks,omitempty"`
	// Pending answers a status report: what waits for the child here.
	Pending *LinkStatus `json:"pending,omitempty"`
}

type activateRequest struct {
	Node      string    `json:"node"`
	Instance  string    `json:"instance"`
	Endpoints Endpoints `json:"endpoints"`
}

type statusReport struct {
	Statuses []Status `json:"statuses"`
}

func (g *Gateway) handle(m *nats.Msg) {
	// The answer goes out on the node's own connection, which may publish anywhere:
	// answer only a request whose reply leads back to the child that sent it.
	child, verb, err := events.CheckControlRequest(m)
	if err != nil {
		g.log.Warn("gateway: control request refused, not answered", "subject", m.Subject, "reply", m.Reply, "err", err)
		return
	}
	// With every worker busy the subscription waits: its pending limits bound what
	// queues behind.
	g.workers <- struct{}{}
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		<-g.workers
		return
	}
	g.inflight.Add(1)
	g.mu.Unlock()
	go func() {
		defer func() { <-g.workers; g.inflight.Done() }()
		g.answer(m, child, verb)
	}()
}

// answer serves one control request and sends the reply.
func (g *Gateway) answer(m *nats.Msg, child, verb string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var instance string
	if m.Header != nil {
		instance = m.Header.Get(events.HeaderInstance)
	}
	reply := g.serve(ctx, child, verb, instance, m.Data)
	data, _ := json.Marshal(reply)
	if err := m.Respond(data); err != nil {
		g.log.Warn("gateway reply", "subject", m.Subject, "err", err)
	}
}

func (g *Gateway) serve(ctx context.Context, child, verb, instance string, data []byte) controlReply {
	// From the watched copy: reading every definition for every request would cost
	// each child's sync in proportion to the number of children.
	t, err := g.view.Tree(ctx)
	if err != nil {
		return controlReply{Error: err.Error()}
	}
	c, ok := t.Get(child)
	if !ok || c.Parent != g.self {
		return controlReply{Error: fmt.Sprintf("node %s is not a child of %s", child, g.self)}
	}
	subtree := append([]*Node{c}, t.Subtree(child)...)
	inSubtree := func(name string) bool {
		for _, n := range subtree {
			if n.Name == name {
				return true
			}
		}
		return false
	}
	if verb != events.VerbActivate {
		// Only the active process syncs; the others hear why they are refused.
		if err := CheckInstance(c, instance); err != nil {
			return replyError(err)
		}
	}
	switch verb {
	case events.VerbActivate:
		var req activateRequest
		if err := json.Unmarshal(data, &req); err != nil || !inSubtree(req.Node) {
			return controlReply{Error: fmt.Sprintf("activate: %s may only activate its own subtree", child)}
		}
		n, err := g.activator.Activate(ctx, req.Node, req.Instance, req.Endpoints)
		if err != nil {
			return replyError(err)
		}
		if _, relayed := g.activator.(*Uplink); relayed && n != nil {
			// Record it here at once (it would otherwise wait for this node's next
			// sync), then close what it fences. The root's Manager does both itself.
			if _, err := g.nodes.putNewer(ctx, n); err != nil {
				g.log.Warn("record activation", "node", req.Node, "err", err)
			}
			g.Fence(ctx, req.Node)
		}
		if n == nil {
			return controlReply{}
		}
		return controlReply{Nodes: []*Node{n}}
	case events.VerbConfig:
		tokens, err := g.boundTokens(ctx, subtree)
		if err != nil {
			return controlReply{Error: err.Error()}
		}
		hooks, err := webhooksFor(ctx, g.webhooks, subtree)
		if err != nil {
			return controlReply{Error: err.Error()}
		}
		return controlReply{Nodes: subtree, Tokens: tokens, Webhooks: hooks}
	case events.VerbStatus:
		var rep statusReport
		var pending *LinkStatus
		if err := json.Unmarshal(data, &rep); err != nil {
			return controlReply{Error: "status: " + err.Error()}
		}
		for _, st := range rep.Statuses {
			if !inSubtree(st.Node) {
				continue // a report may only speak for its own subtree
			}
			if st.Node == child && g.pending != nil {
				// What waits for the child is known here, not there: it is told so.
				if p, err := g.pending(ctx, child); err == nil {
					st = st.WithDownstream(p.Messages, p.Bytes)
					pending = &LinkStatus{Link: "downstream", PendingMessages: p.Messages, PendingBytes: p.Bytes}
				}
			}
			if err := g.status.Put(ctx, st); err != nil {
				return controlReply{Error: err.Error()}
			}
		}
		return controlReply{Pending: pending}
	}
	return controlReply{Error: fmt.Sprintf("unknown control verb %q", verb)}
}

// boundTokens are the client tokens bound to any of nodes: what a subtree needs to
// authorize its clients.
func (g *Gateway) boundTokens(ctx context.Context, nodes []*Node) ([]*ClientToken, error) {
	all, err := g.tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	bound := map[string]bool{}
	for _, n := range nodes {
		for _, t := range n.Settings.ClientTokens {
			bound[t] = true
		}
	}
	out := []*ClientToken{}
	for _, t := range all {
		if bound[t.Name] {
			out = append(out, t)
		}
	}
	return out, nil
}

// Uplink is a connected node's control channel to its parent.
type Uplink struct {
	nc       *nats.Conn
	self     string
	instance string
	lastDown atomic.Pointer[LinkStatus]
}

// NewUplink wraps a connection to the parent's gateway, for one process instance.
func NewUplink(nc *nats.Conn, self, instance string) *Uplink {
	return &Uplink{nc: nc, self: self, instance: instance}
}

func (u *Uplink) request(ctx context.Context, verb string, req any) (controlReply, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return controlReply{}, err
	}
	out := nats.NewMsg(events.ControlSubject(u.self, verb))
	out.Data = data
	out.Header.Set(events.HeaderInstance, u.instance)
	msg, err := u.nc.RequestMsgWithContext(ctx, out)
	if err != nil {
		return controlReply{}, fmt.Errorf("%s request to parent: %w", verb, err)
	}
	var r controlReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return controlReply{}, fmt.Errorf("%s reply from parent: %w", verb, err)
	}
	if err := errorOfCode(r.Code, r.Error); err != nil {
		return r, err
	}
	if r.Error != "" {
		return r, fmt.Errorf("parent refused %s: %s", verb, r.Error)
	}
	return r, nil
}

// Activate asks the root, through the parent, to mark node Active for instance, and
// returns the definition the root stored.
func (u *Uplink) Activate(ctx context.Context, node, instance string, ep Endpoints) (*Node, error) {
	r, err := u.request(ctx, events.VerbActivate, activateRequest{Node: node, Instance: instance, Endpoints: ep})
	if err != nil {
		return nil, err
	}
	switch {
	case len(r.Nodes) == 0:
		return nil, nil // a parent older than fencing: it answers without the definition
	case len(r.Nodes) != 1 || r.Nodes[0].Name != node || CheckInstance(r.Nodes[0], instance) != nil:
		return nil, fmt.Errorf("activate reply from parent does not describe %s active for this process", node)
	}
	return r.Nodes[0], nil
}

// Config fetches this node's definition and its subtree's, this node first, and the
// client tokens bound to them.
func (u *Uplink) Config(ctx context.Context) ([]*Node, []*ClientToken, error) {
	r, err := u.config(ctx)
	return r.Nodes, r.Tokens, err
}

// config is Config with the whole reply (webhooks too).
func (u *Uplink) config(ctx context.Context) (controlReply, error) {
	r, err := u.request(ctx, events.VerbConfig, struct{}{})
	if err != nil {
		return controlReply{}, err
	}
	if len(r.Nodes) == 0 || r.Nodes[0].Name != u.self {
		return controlReply{}, fmt.Errorf("config from parent does not describe %s", u.self)
	}
	return r, nil
}

// Report sends statuses of this node and its subtree up. The parent answers what
// waits for this node there (LastDownstream).
func (u *Uplink) Report(ctx context.Context, sts []Status) error {
	r, err := u.request(ctx, events.VerbStatus, statusReport{Statuses: sts})
	if err == nil && r.Pending != nil {
		p := *r.Pending
		p.AsOf = time.Now().UTC()
		u.lastDown.Store(&p)
	}
	return err
}

// LastDownstream is what waited for this node at its parent at the last status
// report the parent answered (AsOf says when); nil before the first.
func (u *Uplink) LastDownstream() *LinkStatus { return u.lastDown.Load() }
