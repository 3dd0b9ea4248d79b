package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/pipeline"
	"github.com/outpost-edge/outpost/registry"
)

// runConnected runs a node under a parent: activation, settings from the parent, the
// link workers, and a gateway for its own children.
func (n *Node) runConnected(ctx context.Context) error {
	instance, err := instanceID(n.cfg.DataDir)
	if err != nil {
		return err
	}
	n.instance = instance
	op, err := operatorToken(ctx, n.cfg.DataDir, n.cfg.OperatorToken, n.local, n.logger, n.cfg.Notices, operatorTokenFile)
	if err != nil {
		return err
	}
	n.isOperator = sameToken(op)
	unclean, err := uncleanStart(n.cfg.DataDir)
	if err != nil {
		return err
	}
	var parentTLS *tls.Config
	// No publishes buffered while the parent is away: a pull request buffered then
	// reaches the parent on reconnect after its fetch gave up, and the messages it
	// is given wait out their ack time (30 s) before anyone gets them.
	dialOpts := []nats.Option{nats.ReconnectBufSize(-1),
		// Which parent endpoint the site is on: with a root tier, the member an
		// operator looks at when the site stops syncing.
		nats.ConnectHandler(func(nc *nats.Conn) {
			n.logger.Info("parent gateway connected", "endpoint", nc.ConnectedAddr())
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			n.logger.Info("parent gateway reconnected", "endpoint", nc.ConnectedAddr())
		}),
	}
	if n.cs.ParentProtocol == "https" {
		if parentTLS, err = ClientTLS(n.cfg.ParentCAFile); err != nil {
			return err
		}
		dialOpts = append(dialOpts, nats.Secure(parentTLS))
	}
	if n.parentConn, err = events.DialParent(n.cs.ParentGateway, n.cs.SyncTokenName, n.cs.SyncTokenPassword, n.name, instance, dialOpts...); err != nil {
		return err
	}
	n.uplink = hierarchy.NewUplink(n.parentConn, n.name, instance)
	moved := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_link_bytes_total",
		Help: "Content bytes moved over the link to the parent, by direction.",
	}, []string{"direction"})
	if err := n.metrics.Register(moved); err != nil {
		return err
	}
	if err := n.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_fenced",
		Help: "1 once the parent refuses this process (node deactivated, or run by another process): it moves no content.",
	}, func() float64 {
		if n.fenced.Load() != nil {
			return 1
		}
		return 0
	})); err != nil {
		return err
	}
	n.meter = pipeline.NewMeter(moved)
	n.rates = &rateMeter{m: n.meter}
	conflicts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_tag_conflicts_total",
		Help: "Tag writes made at this node or below it that the parent's order overwrote, by kind (replaced, deleted, delete-undone).",
	}, []string{"kind"})
	if err := n.metrics.Register(conflicts); err != nil {
		return err
	}
	for _, kind := range []string{"replaced", "deleted", "delete-undone"} {
		conflicts.WithLabelValues(kind) // shown as 0 until the first one
	}
	n.reconcile = make(chan struct{}, 1)
	syncer := hierarchy.NewSyncer(hierarchy.SyncerConfig{
		Self: n.name, Uplink: n.uplink, Nodes: n.nodes, Tokens: n.tokens, Status: n.status, Interval: n.cfg.StatusInterval,
		Apply: n.applySettings, SelfStatus: n.selfStatus, Logger: n.logger, Fenced: n.fence,
		Pending: n.childPending,
		OnActivation: func(ctx context.Context, child string) {
			if g := n.gateway; g != nil {
				g.Fence(ctx, child)
			}
		},
		Webhooks: n.webhooks, // notify.go
	})
	// Everything that moves content or speaks for this node runs under work: a
	// fenced process stops it, and keeps serving pulls of what it has.
	work, stopWork := context.WithCancel(ctx)
	defer stopWork()
	n.stopWork = stopWork
	n.activated = make(chan struct{})
	if err := n.activate(work, instance, syncer); err != nil {
		return err
	}
	self := n.getSelf()
	mode := self.Settings.Mode
	ledgerCfg := pipeline.DefaultLedgerConfig()
	ledgerCfg.Parent, ledgerCfg.Conflicts, ledgerCfg.Logger = self.Parent, conflicts, n.logger
	ledgerCfg.ConflictWindow = n.cfg.ConflictWindow
	ledgerCfg.LogEnd = func(ctx context.Context) (uint64, error) {
		st, err := n.log.Stats(ctx)
		return st.LastSeq, err
	}
	n.ledger = pipeline.NewLedger(ledgerCfg)
	if err := n.startGateway(n.uplink); err != nil {
		return err
	}
	access := hierarchy.NewAccess(hierarchy.AccessConfig{Self: n.name, Nodes: n.nodes, Tokens: n.tokens})
	if err := n.openRegistry(ctx, mode, access); err != nil {
		return err
	}
	n.parentRT = failoverTransport(parentTransport(parentTLS), n.cs.RegistryEndpoints(), n.logger)
	n.link, err = pipeline.NewLink(ctx, pipeline.LinkConfig{
		Self: n.name, Parent: self.Parent, ParentConn: n.parentConn, LocalConn: n.nc,
		Local: pipeline.Endpoint{Host: loopback(n.httpLn.Addr().String()), User: events.ReplicaUser, Password: n.internalPw,
			Blobs: n.reg, Secure: n.tls != nil, Transport: n.selfRT},
		ParentRegistry: pipeline.Endpoint{Host: n.cs.RegistryEndpoints()[0], Secure: parentTLS != nil,
			User: n.cs.SyncTokenName, Password: n.cs.SyncTokenPassword,
			Header:    http.Header{events.HeaderInstance: {instance}},
			Transport: n.parentRT},
		UpstreamTTL: time.Duration(self.Settings.MessageTTL), Logger: n.logger,
		Window: windowOf(self, n.logger), Now: n.now,
		Sequences: localSequences{n.local}, OnGap: n.onGap, Meter: n.meter,
		Ledger: n.ledger, OnRestart: n.onRestart, Unclean: unclean,
	})
	if err != nil {
		return err
	}
	if err := n.metrics.Register(linkCollector{n}); err != nil { // linkmetrics.go
		return err
	}
	if b, _, err := n.local.Get(ctx, "last-open-window"); err == nil {
		if t, err := time.Parse(time.RFC3339, string(b)); err == nil {
			n.link.RecoverMissed(t)
		}
	}
	go n.runRouter(ctx)
	go n.runNotify(ctx) // notify.go
	go n.runWorker(work, "downstream", n.link.RunDownstream)
	if mode == registry.ReadWrite {
		go n.runWorker(work, "upstream", n.link.RunUpstream)
	}
	go n.reconcileLoop(work)
	go func() {
		// A process started on kept settings syncs once its activation went through:
		// before, its parent would answer it as a process that is not active.
		select {
		case <-n.activated:
			syncer.Run(work)
		case <-work.Done():
		}
	}()
	return n.serveHTTP(ctx, mode)
}

func (n *Node) runWorker(ctx context.Context, name string, run func(context.Context) error) {
	if err := run(ctx); err != nil && ctx.Err() == nil {
		n.logger.Error(name+" worker stopped", "err", err)
	}
}

// activate marks this node Active at the root through its parent and fetches its
// settings. A node that ran before starts on the settings it kept if the parent is
// unreachable; a new one waits for the parent. Another process Active for the node
// is final: ALREADY_ACTIVATED.
func (n *Node) activate(ctx context.Context, instance string, syncer *hierarchy.Syncer) error {
	stored, _, err := n.nodes.Get(ctx, n.name)
	if err != nil && !errors.Is(err, hierarchy.ErrNotFound) {
		return err
	}
	wait := pipeline.NewBackoff(n.cfg.ActivateRetry, n.cfg.ActivateRetryMax)
	for {
		actx, cancel := context.WithTimeout(ctx, n.cfg.ActivateTimeout)
		_, err := n.uplink.Activate(actx, n.name, instance, n.endpoints())
		if err == nil {
			// The gateway let this process in before it was active, for control
			// requests only: log in again to drain.
			err = n.reconnectParent(actx)
		}
		if err == nil {
			err = syncer.SyncOnce(actx)
		}
		cancel()
		switch {
		case err == nil:
			n.logger.Info("activated", "node", n.name, "parent", n.getSelf().Parent)
			close(n.activated)
			return nil
		case errors.Is(err, hierarchy.ErrAlreadyActivated), hierarchy.IsFenced(err):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case stored != nil:
			n.logger.Warn("parent unreachable: starting on kept settings", "err", err)
			n.applySettings(ctx, stored)
			go n.activateLater(ctx, instance)
			return nil
		}
		n.logger.Warn("waiting for parent to activate this node", "gateway", n.cs.ParentGateway, "err", err)
		pipeline.Sleep(ctx, wait.Next())
	}
}

func (n *Node) activateLater(ctx context.Context, instance string) {
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, n.cfg.ActivateTimeout)
		_, err := n.uplink.Activate(actx, n.name, instance, n.endpoints())
		if err == nil {
			err = n.reconnectParent(actx)
		}
		cancel()
		if err == nil {
			n.logger.Info("activated", "node", n.name)
			close(n.activated)
			return
		}
		if errors.Is(err, hierarchy.ErrAlreadyActivated) {
			n.fence(&hierarchy.RefusedError{Code: hierarchy.ErrFenced, Message: err.Error()})
			return
		}
		pipeline.Sleep(ctx, n.cfg.RetryAfter)
	}
}

// reconnectParent logs in at the parent's gateway again and waits until it is in:
// the gateway grants a process its outbox only while it is the active one.
func (n *Node) reconnectParent(ctx context.Context) error {
	if err := n.parentConn.ForceReconnect(); err != nil {
		return fmt.Errorf("reconnect to parent gateway: %w", err)
	}
	for !n.parentConn.IsConnected() {
		if ctx.Err() != nil {
			return fmt.Errorf("reconnect to parent gateway %s: %w", n.cs.ParentGateway, ctx.Err())
		}
		pipeline.Sleep(ctx, 20*time.Millisecond)
	}
	return nil
}

// fence takes this process out of the tree: its parent refuses it (deactivated at
// the root, or another process activated the node). It stops every worker that
// moves content or speaks to the parent, once, says why in its log and status, and
// goes on serving pulls of what it has; writes are refused (see refuseWhenFenced).
func (n *Node) fence(err error) {
	code, state := hierarchy.ErrFenced.Error(), hierarchy.Fenced
	if errors.Is(err, hierarchy.ErrDeactivated) {
		code, state = hierarchy.ErrDeactivated.Error(), hierarchy.Deactivated
	}
	f := &fenced{state: state, detail: hierarchy.Detail{Code: code, Time: time.Now().UTC(),
		Message: err.Error() + " (this process moves no more content; it serves pulls of what it has and refuses writes)"}}
	if !n.fenced.CompareAndSwap(nil, f) {
		return
	}
	n.logger.Error("this process is fenced: it stops moving content, serves pulls of what it has and refuses writes",
		"node", n.name, "code", code, "reason", err.Error())
	if n.stopWork != nil {
		n.stopWork()
	}
	if n.parentConn != nil {
		n.parentConn.Close()
	}
}

// fenced is why this process may no longer sync for its node.
type fenced struct {
	state  hierarchy.State
	detail hierarchy.Detail
}

// refuseWhenFenced keeps a fenced process's registry to pulls: a write there would
// never reach the tree.
func (n *Node) refuseWhenFenced(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := n.fenced.Load()
		if f == nil || r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "DENIED",
			"message": fmt.Sprintf("node %s: this process is fenced (%s) and takes no writes: %s", n.name, f.detail.Code, f.detail.Message)}}})
	})
}

// windowOf reads a node's sync schedule and window. Settings the root checked
// always parse; one stored before the checks (or written around them) gives a
// window that stays closed and an error in the node's status, never a guess.
func windowOf(self *hierarchy.Node, log *slog.Logger) pipeline.Window {
	w, err := pipeline.NewWindow(self.Settings.SyncSchedule, time.Duration(self.Settings.SyncWindow))
	if err != nil {
		err = fmt.Errorf("%w; the link stays closed until the root sends a working one (outpost node update %s --sync-schedule ... --sync-window ...)", err, self.Name)
		log.Error("sync window from parent refused", "err", err)
		return pipeline.BrokenWindow(err)
	}
	return w
}

// applySettings takes this node's definition as its parent sent it.
func (n *Node) applySettings(ctx context.Context, self *hierarchy.Node) {
	old := n.getSelf()
	n.setSelf(self)
	n.meter.SetLimit(self.Settings.BandwidthLimit)
	if n.link != nil {
		n.link.SetWindow(windowOf(self, n.logger))
		if old != nil && self.ResyncGeneration != old.ResyncGeneration {
			n.link.SyncNow() // a resync drains at once, whatever the window
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(self.Settings.LogLevel)); err == nil && lv != n.level.Level() {
		n.level.Set(lv)
		n.logger.Info("log level changed by parent", "level", self.Settings.LogLevel)
	}
	if err := n.log.SetMessageTTL(time.Duration(self.Settings.MessageTTL)); err != nil {
		n.logger.Warn("message TTL from parent", "err", err)
	}
	applied, _, err := n.local.Get(ctx, "resync-generation")
	want := strconv.FormatUint(self.ResyncGeneration, 10)
	if (errors.Is(err, events.ErrKeyNotFound) || (err == nil && string(applied) != want)) && n.requested.Swap(want) != want {
		select {
		case n.reconcile <- struct{}{}:
		default:
		}
	}
}

// onGap records that messages expired before the link applied them and reconciles.
func (n *Node) onGap(direction string, lost uint64) {
	n.detailMu.Lock()
	n.gapDetail = &hierarchy.Detail{Code: "MESSAGES_EXPIRED", Time: time.Now().UTC(), Message: fmt.Sprintf(
		"%d %s messages expired before they were applied (away longer than the message TTL, or purged): reconciling the whole scope",
		lost, direction)}
	n.detailMu.Unlock()
	n.requested.Store("")
	select {
	case n.reconcile <- struct{}{}:
	default:
	}
}

// onRestart reconciles after this node or its parent started: a write stored just
// before a SIGKILL may have no event.
func (n *Node) onRestart(why string) {
	n.logger.Info("reconciling after a restart", "why", why)
	n.requested.Store("")
	select {
	case n.reconcile <- struct{}{}:
	default:
	}
}

// localSequences keeps the link's applied sequences in the node's local bucket.
type localSequences struct{ b *events.Bucket }

func (s localSequences) LoadSequence(direction string) uint64 {
	v, _, err := s.b.Get(context.Background(), "seq-"+direction)
	if err != nil {
		return 0
	}
	seq, _ := strconv.ParseUint(string(v), 10, 64)
	return seq
}

func (s localSequences) SaveSequence(direction string, seq uint64) {
	_ = s.b.Put(context.Background(), "seq-"+direction, []byte(strconv.FormatUint(seq, 10)))
}

// reconcileLoop compares the whole scope with the parent on first activation and on
// each `node resync`.
func (n *Node) reconcileLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.reconcile:
		}
		self := n.getSelf()
		wctx, cancel := n.link.WaitOpen(ctx) // a reconcile moves content too: only in a window
		start := time.Now()
		n.logger.Info("reconciling", "generation", self.ResyncGeneration)
		res, err := n.link.Reconcile(wctx, self.Settings.Repositories.Matches, self.Settings.Mode == hierarchy.ReadWrite)
		if err == nil {
			err = n.verifyScope(wctx, self.Settings.Repositories.Matches) // re-hash what was already here
		}
		cancel()
		if err != nil {
			n.logger.Warn("reconcile", "err", err)
			n.requested.Store("")
			pipeline.Sleep(ctx, n.cfg.RetryAfter)
			select {
			case n.reconcile <- struct{}{}:
			default:
			}
			continue
		}
		if err := n.local.Put(ctx, "resync-generation", []byte(strconv.FormatUint(self.ResyncGeneration, 10))); err != nil {
			n.logger.Warn("reconcile: record", "err", err)
		}
		n.logger.Info("reconciled", "repositories", res.Repositories, "tags", res.Tags, "took", time.Since(start).Round(time.Millisecond))
		n.detailMu.Lock()
		if n.gapDetail != nil && !strings.Contains(n.gapDetail.Message, "reconciled at") {
			n.gapDetail.Message += "; reconciled at " + time.Now().UTC().Format(time.RFC3339)
		}
		n.detailMu.Unlock()
	}
}

// selfStatus is this node's own status for its parent.
func (n *Node) selfStatus(ctx context.Context) hierarchy.Status {
	now := time.Now().UTC()
	st := hierarchy.Status{Node: n.name, State: hierarchy.Online, LogLevel: strings.ToLower(n.level.Level().String()), Reported: now,
		Version: n.version()}
	if self := n.getSelf(); self != nil {
		st.Repositories = self.Settings.Repositories
	}
	if n.link != nil {
		ls := n.link.State()
		st.LastSync, st.LastActivity = ls.LastSync, ls.LastActivity
		st.Counters = linkCounters(ls, n.ledger) // linkmetrics.go
		if now.Sub(ls.LastActivity) < 5*time.Second {
			st.State = hierarchy.Syncing
		}
		if ls.LastError != "" {
			st.Details = append(st.Details, hierarchy.Detail{Code: "LINK_ERROR", Message: ls.LastError, Time: ls.LastErrorTime})
		}
		if ls.WindowError != "" {
			st.State = hierarchy.Unhealthy
			st.Details = append(st.Details, hierarchy.Detail{Code: "SYNC_SCHEDULE_INVALID", Message: ls.WindowError, Time: now})
		}
		st.WindowOpen, st.WindowUntil, st.NextWindowStart, st.NextWindowEnd = ls.Open, ls.Until, ls.Next, ls.NextEnd
		if !ls.Open && st.State == hierarchy.Online {
			st.State = hierarchy.Waiting
		}
		if !ls.LastOpen.IsZero() && !ls.LastOpen.Equal(n.lastOpenSaved) {
			if err := n.local.Put(ctx, "last-open-window", []byte(ls.LastOpen.Format(time.RFC3339))); err == nil {
				n.lastOpenSaved = ls.LastOpen
			}
		}
		// Pending bytes are the content still to move (pending.go); rates are
		// the last minute's. Downstream is what the parent last said waits there.
		up, down := n.rates.rates(time.Now())
		// A ReadOnly node has no upstream link: nothing to report, and no outbox to
		// make for it.
		if self := n.getSelf(); self != nil && self.Settings.Mode == hierarchy.ReadWrite {
			if p, err := n.upstreamPending(ctx); err == nil {
				st.Links = append(st.Links, hierarchy.LinkStatus{Link: "upstream", PendingMessages: p.Messages, PendingBytes: p.Bytes, BytesPerSecond: up})
			}
		}
		dl := hierarchy.LinkStatus{Link: "downstream", BytesPerSecond: down}
		if last := n.uplink.LastDownstream(); last != nil {
			dl.PendingMessages, dl.PendingBytes, dl.AsOf = last.PendingMessages, last.PendingBytes, last.AsOf
		}
		st.Links = append(st.Links, dl)
	}
	n.detailMu.Lock()
	if n.gapDetail != nil {
		st.Details = append(st.Details, *n.gapDetail)
	}
	n.detailMu.Unlock()
	if f := n.fenced.Load(); f != nil {
		st.State = f.state
		st.Details = append(st.Details, f.detail)
	}
	if count, c := n.ledger.Conflicts(); count > 0 {
		st.Details = append(st.Details, hierarchy.Detail{Code: hierarchy.DetailTagConflict, Time: c.Time, Message: fmt.Sprintf(
			"%d writes made here or below were overwritten by the parent's order since start; last: %s", count, c)})
	}
	if n.reg != nil {
		st.Details = append(st.Details, n.integrityDetails()...)
		var gcDetails []hierarchy.Detail
		st.GC, gcDetails = gcStatus(n.reg)
		st.Details = append(st.Details, gcDetails...)
		if n.log.Damage() != nil {
			st.State = hierarchy.Unhealthy
		}
		if err := n.reg.Ready(ctx); err != nil {
			st.State = hierarchy.Unhealthy
			st.Details = append(st.Details, hierarchy.Detail{Code: "UNHEALTHY", Message: err.Error(), Time: now})
		}
	}
	st.Webhooks = n.webhookStatus(ctx) // notify.go
	return st
}

// runningMarker is in the data directory while a process runs on it; close removes
// it, so one found at start tells of a crash.
const runningMarker = "running"

// uncleanStart says whether the last process on data ended without a clean stop
// (SIGKILL, power cut), and marks this one running.
func uncleanStart(data string) (bool, error) {
	file := filepath.Join(data, runningMarker)
	_, err := os.Stat(file)
	unclean := err == nil
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		return false, fmt.Errorf("running marker: %w", err)
	}
	return unclean, nil
}

// instanceID identifies this process's data directory to the root: a restart on the
// same data is the same instance; another directory is another process.
func instanceID(data string) (string, error) {
	file := filepath.Join(data, "instance")
	if b, err := os.ReadFile(file); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := os.WriteFile(file, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	return id, nil
}

// loopback turns a wildcard listen address into one this process can dial.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
