package events

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// activeInstance lets in "sitea" with any instance; only active is Active.
type activeInstance struct{ active string }

func (a activeInstance) AuthenticateChild(user, _, instance string) (ChildLogin, bool) {
	return ChildLogin{Child: "sitea", Active: instance == a.active}, user == "sitea-sync"
}

// TestGatewayFencesByInstance: an instance that is not the active one may send
// control requests only; one without an instance is not let in; DisconnectChild
// closes exactly the instances it is told to.
func TestGatewayFencesByInstance(t *testing.T) {
	srv, err := StartServer(ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "fence"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	srv.SetChildAuthenticator(activeInstance{active: "newinstance"})
	dial := func(instance string) (*nats.Conn, *asyncErrors) {
		errs := &asyncErrors{}
		nc, err := nats.Connect("nats://"+srv.Addr().String(), nats.UserInfo("sitea-sync", "pw"),
			nats.Name(ChildConnName("sitea", instance)), nats.CustomInboxPrefix(inboxPrefix("sitea", instance)),
			nats.MaxReconnects(0), nats.ErrorHandler(errs.add))
		if err != nil {
			t.Fatalf("login of %s: %v", instance, err)
		}
		t.Cleanup(nc.Close)
		return nc, errs
	}
	if _, err := nats.Connect("nats://"+srv.Addr().String(), nats.UserInfo("sitea-sync", "pw"), nats.MaxReconnects(0)); err == nil {
		t.Error("a login without an instance in its connection name was let in")
	}
	own, _ := srv.Connect("node")
	defer own.Close()
	sub, err := own.Subscribe(ControlSubscription, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	oldConn, oldErrs := dial("oldinstance")
	newConn, _ := dial("newinstance")
	if _, err := oldConn.Request(ControlSubject("sitea", VerbConfig), nil, 2*time.Second); err != nil {
		t.Errorf("control request of an inactive instance: %v, want it answered", err)
	}
	next := "$JS.API.CONSUMER.MSG.NEXT." + DownstreamOutbox("sitea") + "." + drainConsumer
	_ = oldConn.Publish(next, nil)
	if !oldErrs.wait(`Permissions Violation for Publish to "` + next + `"`) {
		t.Errorf("inactive instance drained: server said %q, want a permissions violation", oldErrs.String())
	}
	if _, err := oldConn.SubscribeSync(inboxPrefix("sitea", "newinstance") + ".>"); err != nil ||
		!oldErrs.wait(`Permissions Violation for Subscription to "`+inboxPrefix("sitea", "newinstance")) {
		t.Errorf("the old instance subscribed to the new one's inbox: %v, server said %q", err, oldErrs.String())
	}
	if n := srv.DisconnectChild("sitea-sync", func(i string) bool { return i == "newinstance" }); n != 1 {
		t.Errorf("DisconnectChild closed %d connections, want the old one", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !oldConn.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !oldConn.IsClosed() || !newConn.IsConnected() {
		t.Errorf("after DisconnectChild: old closed %v, new connected %v", oldConn.IsClosed(), newConn.IsConnected())
	}
}

// asyncErrors collects what the server says to a connection asynchronously.
type asyncErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrors) add(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err.Error())
}

func (a *asyncErrors) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.errs, "; ")
}

// wait polls for up to 2 s until the server has said want.
func (a *asyncErrors) wait(want string) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(a.String(), want) {
			return true
		}
	}
	return false
}
