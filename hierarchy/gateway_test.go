package hierarchy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
)

// syncBuffer is a log destination tests read while the gateway writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gatewayFixture is a root with a running gateway, two children (sitea, siteb)
// with real sync tokens, an event log and both children's outboxes.
type gatewayFixture struct {
	rootFixture
	g    *Gateway
	logs *syncBuffer
	pw   map[string]string
	log  *events.Log
}

func startGateway(t *testing.T) gatewayFixture {
	t.Helper()
	ctx := context.Background()
	f := gatewayFixture{rootFixture: startRoot(t), logs: &syncBuffer{}, pw: map[string]string{}}
	for _, c := range []string{"sitea", "siteb"} {
		if _, err := f.m.Create(ctx, c, "", settings(ReadOnly, "team/*")); err != nil {
			t.Fatal(err)
		}
		cs, err := f.m.Settings(ctx, c, 1)
		if err != nil {
			t.Fatal(err)
		}
		f.pw[c] = cs.SyncTokenPassword
		// Active, so that its logins get everything a child's process may do.
		if _, err := f.m.Activate(ctx, c, fixtureInstance(c), Endpoints{}); err != nil {
			t.Fatal(err)
		}
	}
	g, err := StartGateway(GatewayConfig{Self: "root", Conn: f.nc, Nodes: f.m.store, Tokens: f.m.tokens, Status: f.m.status,
		Activator: f.m, Logger: slog.New(slog.NewTextHandler(f.logs, nil)),
		Pending: func(ctx context.Context, child string) (events.Pending, error) {
			ob, err := events.OpenOutbox(ctx, f.nc, events.DownstreamOutbox(child), events.DefaultMessageTTL)
			if err != nil {
				return events.Pending{}, err
			}
			return ob.Pending(ctx)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	f.g = g
	f.srv.SetChildAuthenticator(g)
	if f.log, err = events.OpenLog(ctx, f.nc, events.LogConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := events.OpenBucket(ctx, f.nc, events.BucketLocal); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f gatewayFixture) event(t *testing.T, tag string) *events.Event {
	t.Helper()
	e := &events.Event{Action: events.ActionPush, Repository: "team/app", Tag: tag, Digest: "sha256:" + strings.Repeat("a", 64), Origin: "root"}
	if err := f.log.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return e
}

func (f gatewayFixture) fillOutbox(t *testing.T, child string, n int) {
	t.Helper()
	ctx := context.Background()
	ob, err := events.OpenOutbox(ctx, f.nc, events.DownstreamOutbox(child), events.DefaultMessageTTL)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e := f.event(t, fmt.Sprintf("%s-%d", child, i))
		if err := ob.Append(ctx, e, e.ID+"."+child); err != nil {
			t.Fatal(err)
		}
	}
}

// fixtureInstance is the process instance a fixture child is active as.
func fixtureInstance(child string) string { return "instance" + child }

func (f gatewayFixture) dial(t *testing.T, child string) *eventstest.Hostile {
	t.Helper()
	h, err := eventstest.DialHostile(f.srv.Addr().String(), SyncTokenName(child), f.pw[child], child, fixtureInstance(child))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// fetchUnacked takes n messages from an outbox's or the log's durable consumer over
// nc and leaves them unacknowledged; it returns their ack subjects.
func fetchUnacked(t *testing.T, nc *nats.Conn, stream, consumer string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var acks []string
	for m := range b.Messages() {
		acks = append(acks, m.Reply())
	}
	if len(acks) != n {
		t.Fatalf("%s/%s: fetched %d messages, want %d (%v)", stream, consumer, len(acks), n, b.Error())
	}
	return acks
}

// TestGatewayConfinesAChildToItsOwnSubjects: logged in with its real sync token, a
// child tries every JetStream API family, the KV buckets, the event log, the other
// child's outbox, control subjects and inbox, the node's inboxes and $SYS, each as the
// subject it publishes and as the reply of every request it may legitimately send.
// Nothing the parent keeps, and nothing of the other child, may change; every refusal
// says why.
func TestGatewayConfinesAChildToItsOwnSubjects(t *testing.T) {
	f := startGateway(t)
	ctx := context.Background()
	f.fillOutbox(t, "sitea", 4)
	f.fillOutbox(t, "siteb", 3)
	if _, err := f.log.Consume(ctx); err != nil { // the router's durable consumer
		t.Fatal(err)
	}
	local, err := events.OpenBucket(ctx, f.nc, events.BucketLocal)
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Put(ctx, "instance", []byte("root-instance")); err != nil {
		t.Fatal(err)
	}

	// siteb has two messages in hand (unacked) and one waiting; the router one.
	b := f.dial(t, "siteb")
	bAcks := fetchUnacked(t, b.NC, events.DownstreamOutbox("siteb"), "drain", 2)
	routerAcks := fetchUnacked(t, f.nc, events.StreamName, "router", 1)

	// sitea's own jetstream client works as the link uses it.
	a := f.dial(t, "sitea")
	q, err := events.OpenQueue(ctx, a.NC, events.DownstreamOutbox("sitea"))
	if err != nil {
		t.Fatalf("sitea opens its own outbox: %v", err)
	}
	if first, last, err := q.Bounds(ctx); err != nil || first != 1 || last != 4 {
		t.Fatalf("sitea reads its outbox's bounds: %d..%d, %v", first, last, err)
	}
	ds, err := q.NextBatch(ctx, 1, 2*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("sitea takes a message: %d, %v", len(ds), err)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatalf("sitea acks (and the parent confirms): %v", err)
	}
	if next, err := q.NextSequence(ctx); err != nil || next != 2 {
		t.Fatalf("sitea's next sequence: %d, %v", next, err)
	}
	uplink := NewUplink(a.NC, "sitea", fixtureInstance("sitea"))
	if nodes, _, err := uplink.Config(ctx); err != nil || nodes[0].Name != "sitea" {
		t.Fatalf("sitea's config: %v", err)
	}
	aAck := fetchUnacked(t, a.NC, events.DownstreamOutbox("sitea"), "drain", 1)[0]

	// Watchers: the node's own inbox space, the other child's inbox (seen by the
	// other child and by the node), the other child's control subjects (where only
	// siteb's own requests, through its account, may appear).
	var leaked []string
	var leakMu sync.Mutex
	watch := func(nc *nats.Conn, who, subject string) {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			if child, _, err := events.CheckControlRequest(m); err == nil && child == "siteb" {
				return
			}
			leakMu.Lock()
			leaked = append(leaked, fmt.Sprintf("%s got %s (reply %q): %.80s", who, m.Subject, m.Reply, m.Data))
			leakMu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	watch(f.nc, "node", "_INBOX.hostile")
	watch(f.nc, "node", "_INBOX_siteb.instancesiteb.hostile")
	watch(b.NC, "siteb", "_INBOX_siteb.instancesiteb.hostile")
	watch(f.nc, "node", "outpost.ctl.siteb.>")
	_ = b.NC.Flush()
	_ = f.nc.Flush()

	// Listening where it must not: every subscription outside its inbox is refused.
	overheard := make(chan *nats.Msg, 64)
	subs := []string{">", "_INBOX.>", "_INBOX_siteb.>", "_R_.>", "$JS.>", "$JS.API.>", "$JS.ACK.>", "$KV.>",
		"outpost.>", "outpost.ctl.siteb.*", "outpost.outbox.>", "outpost.events.>", "$SYS.>"}
	for _, subj := range subs {
		got, err := a.Subscribe(subj, overheard)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("Permissions Violation for Subscription to %q", subj); !strings.Contains(got, want) {
			t.Errorf("subscribe %s: server said %q, want %q", subj, got, want)
		}
	}

	before, err := eventstest.Snapshot(ctx, f.nc, "DOWN_sitea/drain")
	if err != nil {
		t.Fatal(err)
	}

	// What sitea aims at, with a body that would act if it got through.
	empty := []byte{}
	targets := []struct {
		subject, why string
		data         []byte
	}{
		{"$JS.API.STREAM.CREATE.EVIL", "create a stream", []byte(`{"name":"EVIL","subjects":["evil.>"]}`)},
		{"$JS.API.STREAM.UPDATE.EVENTS", "change the event log", []byte(`{"name":"EVENTS","subjects":["evil"]}`)},
		{"$JS.API.STREAM.DELETE.EVENTS", "delete the event log", empty},
		{"$JS.API.STREAM.PURGE.EVENTS", "purge the event log", empty},
		{"$JS.API.STREAM.PURGE.DOWN_siteb", "purge siteb's outbox", empty},
		{"$JS.API.STREAM.DELETE.KV_OUTPOST_NODES", "delete the nodes bucket", empty},
		{"$JS.API.STREAM.PURGE.KV_OUTPOST_TOKENS", "purge the tokens bucket", empty},
		{"$JS.API.STREAM.PURGE.KV_OUTPOST_STATUS", "purge the status bucket", empty},
		{"$JS.API.STREAM.PURGE.KV_OUTPOST_LOCAL", "purge the local bucket", empty},
		{"$JS.API.STREAM.INFO.EVENTS", "read the event log's info", empty},
		{"$JS.API.STREAM.NAMES", "list streams", empty},
		{"$JS.API.STREAM.LIST", "list streams", empty},
		{"$JS.API.STREAM.MSG.GET.KV_OUTPOST_TOKENS", "read a token hash", []byte(`{"seq":1}`)},
		{"$JS.API.STREAM.MSG.DELETE.EVENTS", "delete an event", []byte(`{"seq":1}`)},
		{"$JS.API.STREAM.SNAPSHOT.EVENTS", "snapshot the event log", []byte(`{"deliver_subject":"_INBOX_sitea.snap"}`)},
		{"$JS.API.STREAM.RESTORE.EVIL", "restore a stream", empty},
		{"$JS.API.CONSUMER.CREATE.EVENTS", "add a consumer on the log", []byte(`{"stream_name":"EVENTS","config":{"ack_policy":"none"}}`)},
		{"$JS.API.CONSUMER.CREATE.EVENTS.evil", "add a named consumer on the log", []byte(`{"stream_name":"EVENTS","config":{"name":"evil","ack_policy":"none"}}`)},
		{"$JS.API.CONSUMER.DURABLE.CREATE.DOWN_siteb.evil", "add a durable on siteb's outbox", []byte(`{"stream_name":"DOWN_siteb","config":{"durable_name":"evil","ack_policy":"none"}}`)},
		{"$JS.API.CONSUMER.DELETE.DOWN_siteb.drain", "delete siteb's consumer", empty},
		{"$JS.API.CONSUMER.DELETE.EVENTS.router", "delete the router's consumer", empty},
		{"$JS.API.CONSUMER.INFO.DOWN_siteb.drain", "read siteb's consumer", empty},
		{"$JS.API.CONSUMER.LIST.EVENTS", "list the log's consumers", empty},
		{"$JS.API.CONSUMER.NAMES.DOWN_siteb", "list siteb's consumers", empty},
		{"$JS.API.CONSUMER.MSG.NEXT.DOWN_siteb.drain", "take siteb's messages", []byte(`{"batch":5,"no_wait":true}`)},
		{"$JS.API.CONSUMER.MSG.NEXT.EVENTS.router", "take the router's events", []byte(`{"batch":5,"no_wait":true}`)},
		{"$JS.API.CONSUMER.PAUSE.DOWN_siteb.drain", "pause siteb's consumer", []byte(`{"pause_until":"2099-01-01T00:00:00Z"}`)},
		{"$JS.API.INFO", "read the account's JetStream info", empty},
		{"$JS.API.DIRECT.GET.KV_OUTPOST_TOKENS", "read a token hash directly", []byte(`{"seq":1}`)},
		{"$JS.API.ACCOUNT.PURGE.$G", "purge the node's account", empty},
		{"$JS.API.SERVER.REMOVE", "remove a server", empty},
		{"$JS.API.META.LEADER.STEPDOWN", "step the meta leader down", empty},
		{"$KV.OUTPOST_NODES.evil", "define a node", []byte(`{"name":"evil","parent":"root"}`)},
		{"$KV.OUTPOST_TOKENS.evil", "add a client token", []byte(`{"name":"evil"}`)},
		{"$KV.OUTPOST_STATUS.siteb", "report for siteb", []byte(`{"node":"siteb","state":"Unhealthy"}`)},
		{"$KV.OUTPOST_LOCAL.instance", "replace the root's instance", []byte(`evil`)},
		{"outpost.events.push", "inject an event", []byte(`{"id":"evil","action":"push","repository":"team/app","origin":"evil"}`)},
		{"outpost.outbox.DOWN_siteb", "inject into siteb's outbox", []byte(`{"id":"evil","action":"push","repository":"team/app","origin":"evil"}`)},
		{bAcks[0], "ack siteb's message ($JS.ACK of another stream)", empty},
		{routerAcks[0], "ack the router's event ($JS.ACK of the log)", empty},
		{"outpost.ctl.siteb.config", "read siteb's settings", empty},
		{"outpost.ctl.siteb.status", "report as siteb", []byte(`{"statuses":[{"node":"siteb","state":"Unhealthy"}]}`)},
		{"_INBOX_siteb.instancesiteb.hostile", "write into siteb's inbox", []byte("hostile")},
		{"_INBOX.hostile", "write into the node's inbox space", []byte("hostile")},
		{"$SYS.REQ.SERVER.PING", "ask the system account", empty},
	}
	// What sitea may legitimately send, each a carrier for a hostile reply.
	carriers := []struct {
		subject string
		data    []byte
	}{
		{"$JS.API.CONSUMER.INFO.DOWN_sitea.drain", nil},
		{"$JS.API.STREAM.INFO.DOWN_sitea", nil},
		{"$JS.API.CONSUMER.MSG.NEXT.DOWN_sitea.drain", []byte(`{"batch":1,"no_wait":true}`)},
		{aAck, []byte("+WPI")}, // the consumer confirms with an empty message
		{events.ControlSubject("sitea", events.VerbConfig), []byte(`{}`)},
		{events.ControlSubject("sitea", events.VerbStatus), []byte(`{"statuses":[]}`)},
		{events.ControlSubject("sitea", events.VerbActivate), []byte(`{}`)},
	}
	// Each carrier reaches a responder: asked with sitea's own inbox as reply, it
	// is answered, so the rows below put real answers on hostile replies.
	ok, err := a.NC.SubscribeSync("_INBOX_sitea.instancesitea.ok.>")
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range carriers {
		if got, err := a.Publish(c.subject, fmt.Sprintf("_INBOX_sitea.instancesitea.ok.%d", i), nil, c.data); err != nil || got != "" {
			t.Fatalf("carrier %s: %q, %v", c.subject, got, err)
		}
		if _, err := ok.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("carrier %s: no answer on sitea's inbox: %v", c.subject, err)
		}
	}
	_ = ok.Unsubscribe()
	type row struct {
		name, subject, reply string
		data                 []byte
		refused              string
	}
	var rows []row
	for _, tg := range targets {
		rows = append(rows, row{name: "subject " + tg.why, subject: tg.subject, reply: "_INBOX_sitea.instancesitea.r", data: tg.data,
			refused: fmt.Sprintf("Permissions Violation for Publish to %q", tg.subject)})
	}
	// sitea's own subjects as replies: an answer that loops back into a request.
	loops := []string{events.ControlSubject("sitea", events.VerbStatus), events.ControlSubject("sitea", events.VerbActivate),
		"$JS.API.CONSUMER.MSG.NEXT.DOWN_sitea.drain", "$JS.API.STREAM.INFO.DOWN_sitea"}
	for _, l := range loops {
		for _, c := range carriers {
			rows = append(rows, row{name: "reply loops into " + l + " via " + c.subject, subject: c.subject, reply: l, data: c.data})
		}
	}
	for _, tg := range targets {
		for _, c := range carriers {
			r := row{name: "reply " + tg.why + " via " + c.subject, subject: c.subject, reply: tg.subject, data: c.data}
			if strings.HasPrefix(tg.subject, "$JS.ACK.") {
				r.refused = fmt.Sprintf("Permissions Violation for Publish with Reply of %q", tg.subject)
			}
			rows = append(rows, r)
		}
	}
	for _, wild := range []string{">", "*", "_INBOX.>", "_INBOX_siteb.>", "$JS.API.>", "$KV.OUTPOST_NODES.*"} {
		for _, c := range carriers {
			rows = append(rows, row{name: "wildcard reply " + wild + " via " + c.subject, subject: c.subject, reply: wild, data: c.data})
		}
	}

	// siteb's own config request is the barrier: the gateway answers in order, so
	// once it is answered, what sitea sent before has been handled; and siteb must
	// keep being answered whatever sitea does. (sitea itself is not: a wildcard
	// reply makes nats-server drop sitea's own outstanding response mappings, so
	// sitea's next request may go unanswered. That harms only sitea.)
	uplinkB := NewUplink(b.NC, "siteb", fixtureInstance("siteb"))
	barrier := func(after []string) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, _, err := uplinkB.Config(ctx); err != nil {
			t.Fatalf("siteb's own config request after\n  %s\n: %v\ngateway log:\n%s", strings.Join(after, "\n  "), err, f.logs.String())
		}
	}
	// Rows are checked in groups that share a reply (one target on every carrier):
	// a change names the group's rows.
	var group []string
	for i, r := range rows {
		got, err := a.Publish(r.subject, r.reply, nil, r.data)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		switch {
		case r.refused != "" && !strings.Contains(got, r.refused):
			t.Errorf("%s: server said %q, want %q", r.name, got, r.refused)
		case r.refused == "" && got != "":
			t.Errorf("%s: unexpected refusal %q (a carrier must stay allowed)", r.name, got)
		}
		group = append(group, r.name)
		if i+1 < len(rows) && rows[i+1].reply == r.reply {
			continue
		}
		barrier(group)
		after, err := eventstest.Snapshot(ctx, f.nc, "DOWN_sitea/drain")
		if err != nil {
			t.Fatal(err)
		}
		if d := after.Diff(before); len(d) > 0 {
			t.Errorf("one of these changed the parent:\n  %s\nchanges:\n  %s", strings.Join(group, "\n  "), strings.Join(d, "\n  "))
			before = after
		}
		group = nil
	}
	time.Sleep(300 * time.Millisecond) // let anything still under way land before the last look
	after, err := eventstest.Snapshot(ctx, f.nc, "DOWN_sitea/drain")
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Diff(before); len(d) > 0 {
		t.Errorf("the attempts changed the parent:\n  %s", strings.Join(d, "\n  "))
	}
	select {
	case m := <-overheard:
		t.Errorf("a refused subscription of sitea got %s: %.80s", m.Subject, m.Data)
	default:
	}
	leakMu.Lock()
	if len(leaked) > 0 {
		t.Errorf("%d messages reached other inboxes or siteb's control subjects:\n  %s", len(leaked), strings.Join(leaked, "\n  "))
	}
	leakMu.Unlock()
	// siteb still holds its two messages and the third waits for it.
	js, _ := jetstream.New(f.nc)
	if c, err := js.Consumer(ctx, events.DownstreamOutbox("siteb"), "drain"); err != nil {
		t.Fatal(err)
	} else if ci := c.CachedInfo(); ci.NumAckPending != 2 || ci.NumPending != 1 {
		t.Errorf("siteb's consumer: %d in hand, %d waiting; want 2 and 1", ci.NumAckPending, ci.NumPending)
	}
	// sitea is still served after all that (its first request may be lost to its
	// own wildcard replies, see above).
	var lastErr error
	for range 3 {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _, lastErr = uplink.Config(ctx)
		cancel()
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Errorf("sitea's own config request after the attempts: %v", lastErr)
	}
	// sitea's own pull with heartbeats still works after all that.
	cons, err := jetstream.New(a.NC)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cons.Consumer(ctx, events.DownstreamOutbox("sitea"), "drain")
	if err != nil {
		t.Fatal(err)
	}
	// A pull that waits, kept alive by heartbeats, gets what arrives meanwhile.
	ob, err := events.OpenOutbox(ctx, f.nc, events.DownstreamOutbox("sitea"), events.DefaultMessageTTL)
	if err != nil {
		t.Fatal(err)
	}
	appended := make(chan error, 1)
	late := &events.Event{Action: events.ActionPush, Repository: "team/app", Tag: "late", Digest: "sha256:" + strings.Repeat("b", 64), Origin: "root", ID: events.NewID()}
	time.AfterFunc(1500*time.Millisecond, func() { appended <- ob.Append(ctx, late, late.ID+".sitea") })
	start := time.Now()
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchHeartbeat(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var fetched int
	for m := range batch.Messages() {
		fetched++
		_ = m.Ack()
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	if err := batch.Error(); err != nil || fetched != 1 {
		t.Errorf("sitea's fetch with heartbeats: %d messages after %s, %v; want the one appended after 1.5 s", fetched, time.Since(start), err)
	}
	t.Logf("gateway refusals logged: %d", strings.Count(f.logs.String(), "control request refused"))
	t.Logf("%d subscriptions refused", len(subs))
	t.Logf("%d attempts (%d targets as subject, %d as replies on %d carriers, %d replies looping into sitea's own subjects, %d wildcard replies)",
		len(rows), len(targets), len(targets)*len(carriers), len(carriers), len(loops)*len(carriers),
		len(rows)-len(targets)-len(targets)*len(carriers)-len(loops)*len(carriers))
}

// TestGatewayAnswersOnlyIntoTheChildsReplySpace: the gateway answers with the node's
// own connection, so it answers only a request whose reply nats-server maps back to
// the child's own account; any other reply gets no answer and a log line saying why.
func TestGatewayAnswersOnlyIntoTheChildsReplySpace(t *testing.T) {
	f := startGateway(t)
	ctx := context.Background()
	f.fillOutbox(t, "sitea", 2)
	a := f.dial(t, "sitea")
	config := events.ControlSubject("sitea", events.VerbConfig)

	// The legitimate way: the child's inbox, in the child's account, is answered.
	if _, _, err := NewUplink(a.NC, "sitea", fixtureInstance("sitea")).Config(ctx); err != nil {
		t.Fatalf("sitea's own config request: %v", err)
	}
	before, err := eventstest.Snapshot(ctx, f.nc, "DOWN_sitea/drain")
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan *nats.Msg, 16)
	for _, subj := range []string{"_INBOX_sitea.>", "_INBOX.hostile"} {
		sub, err := f.nc.ChanSubscribe(subj, answered)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	for _, c := range []struct {
		name, subject, reply, log string
		send                      func(subject, reply string) error
	}{
		{"a request in the node's account with a JetStream API reply", config, "$JS.API.STREAM.PURGE.EVENTS",
			`reply=$JS.API.STREAM.PURGE.EVENTS`, nil},
		{"a request in the node's account with the child's inbox as reply", config, "_INBOX_sitea.x",
			`reply=_INBOX_sitea.x`, nil},
		{"a request in the node's account with the node's inbox as reply", config, "_INBOX.hostile",
			`reply=_INBOX.hostile`, nil},
		{"a request in the node's account without a reply", config, "", `sent reply \"\"`, nil},
	} {
		mark := len(f.logs.String())
		send := c.send
		if send == nil {
			send = func(subject, reply string) error { return f.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply}) }
		}
		if err := send(c.subject, c.reply); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := f.nc.Flush(); err != nil { // the server has it before the request below
			t.Fatal(err)
		}
		// The gateway still answers its child after it. Two connections' messages are
		// not ordered with each other at the gateway, so the refusal's log line is
		// waited for, not assumed.
		wait, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, _, err := NewUplink(a.NC, "sitea", fixtureInstance("sitea")).Config(wait); err != nil {
			t.Fatalf("%s: sitea's own config request after it: %v", c.name, err)
		}
		cancel()
		refused := func(logs string) bool {
			return strings.Contains(logs, "control request refused, not answered") && strings.Contains(logs, c.log)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !refused(f.logs.String()[mark:]) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if logs := f.logs.String()[mark:]; !refused(logs) {
			t.Errorf("%s: the gateway's log says\n%s\nwant a refusal naming %s", c.name, logs, c.log)
		}
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case m := <-answered:
		t.Errorf("the gateway answered on %s: %s", m.Subject, m.Data)
	default:
	}
	after, err := eventstest.Snapshot(ctx, f.nc, "DOWN_sitea/drain")
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Diff(before); len(d) > 0 {
		t.Errorf("refused requests changed the parent:\n  %s", strings.Join(d, "\n  "))
	}
}

// Control requests are served at once, not one after another: a status report
// whose outbox read is slow (at a tier, a round trip to a leader elsewhere) holds
// no other child's sync behind it. Served one at a time, 400 children's syncs at a
// tier of three timed out by the hundred.
func TestGatewayServesControlRequestsAtOnce(t *testing.T) {
	ctx := context.Background()
	f := startRoot(t)
	children := []string{"sitea", "siteb", "sitec", "sited"}
	pw := map[string]string{}
	for _, c := range children {
		if _, err := f.m.Create(ctx, c, "", settings(ReadOnly, "team/*")); err != nil {
			t.Fatal(err)
		}
		cs, err := f.m.Settings(ctx, c, 1)
		if err != nil {
			t.Fatal(err)
		}
		pw[c] = cs.SyncTokenPassword
		if _, err := f.m.Activate(ctx, c, fixtureInstance(c), Endpoints{}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var once sync.Once
	var waiting sync.Map
	g, err := StartGateway(GatewayConfig{Self: "root", Conn: f.nc, Nodes: f.m.store, Tokens: f.m.tokens, Status: f.m.status,
		Activator: f.m, Logger: slog.New(slog.DiscardHandler),
		Pending: func(ctx context.Context, child string) (events.Pending, error) {
			waiting.Store(child, true)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return events.Pending{}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before Stop waits
	f.srv.SetChildAuthenticator(g)

	errs := make(chan error, len(children))
	for _, c := range children {
		nc, err := events.DialParent(f.srv.Addr().String(), SyncTokenName(c), pw[c], c, fixtureInstance(c))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		u := NewUplink(nc, c, fixtureInstance(c))
		go func() { errs <- u.Report(ctx, []Status{{Node: c, State: Online}}) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		waiting.Range(func(any, any) bool { n++; return true })
		if n == len(children) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d children's status reports were being served at once after 10 s, want all", n, len(children))
		}
		time.Sleep(10 * time.Millisecond)
	}
	once.Do(func() { close(release) })
	for range children {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
