package events

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestCheckControlRequestPinsTheReplyToTheSender(t *testing.T) {
	from := func(acc string) nats.Header {
		h := nats.Header{}
		if acc != "" {
			h.Set(requestInfoHeader, `{"acc":"`+acc+`","rtt":1000}`)
		}
		return h
	}
	own := childAccountName("sitea")
	for _, c := range []struct {
		name, subject, reply string
		hdr                  nats.Header
		want                 string // "" when it must be accepted
	}{
		{"through sitea's import", "outpost.ctl.sitea.config", "_R_.abc123.xyz", from(own), ""},
		{"a JetStream API reply", "outpost.ctl.sitea.config", "$JS.API.STREAM.PURGE.EVENTS", from(own), `sent reply "$JS.API.STREAM.PURGE.EVENTS"`},
		{"the child's inbox, not through its import", "outpost.ctl.sitea.config", "_INBOX_sitea.x", from(own), `sent reply "_INBOX_sitea.x"`},
		{"an ack subject", "outpost.ctl.sitea.status", "$JS.ACK.DOWN_sitea.drain.1.2.2.3.0", from("$G"), `sent reply "$JS.ACK.`},
		{"no reply", "outpost.ctl.sitea.config", "", from(own), `sent reply ""`},
		{"a wildcard service reply", "outpost.ctl.sitea.config", "_R_.>", from(own), `sent reply "_R_.>"`},
		{"another child's account", "outpost.ctl.sitea.config", "_R_.abc123.xyz", from(childAccountName("siteb")), `came from account "outpost-child-siteb"`},
		{"the node's account", "outpost.ctl.sitea.config", "_R_.abc123.xyz", from("$G"), `came from account "$G"`},
		{"no request info", "outpost.ctl.sitea.config", "_R_.abc123.xyz", from(""), `came from account ""`},
		{"a forged account prefix", "outpost.ctl.sitea.config", "_R_.abc123.xyz", from(own + "x"), `came from account "outpost-child-siteax"`},
	} {
		child, verb, err := CheckControlRequest(&nats.Msg{Subject: c.subject, Reply: c.reply, Header: c.hdr})
		if c.want == "" {
			if err != nil || child != "sitea" || verb == "" {
				t.Errorf("%s: %s %s, %v", c.name, child, verb, err)
			}
			continue
		}
		if !errors.Is(err, ErrForeignReply) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrForeignReply naming %s", c.name, err, c.want)
		}
	}
}

// oneChild lets one child log in with one password.
type oneChild struct{ name, password string }

func (c oneChild) AuthenticateChild(user, password, _ string) (ChildLogin, bool) {
	return ChildLogin{Child: c.name, Active: true}, user == c.name+"-sync" && password == c.password
}

// TestChildLoginsShareTheirOwnAccount: every login of a child lands in its account,
// which has no JetStream and only the child's imports, however often it logs in.
func TestChildLoginsShareTheirOwnAccount(t *testing.T) {
	s, err := StartServer(ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "acctest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	s.SetChildAuthenticator(oneChild{"sitea", "pw"})
	for i := range 3 {
		nc, err := nats.Connect("nats://"+s.Addr().String(), nats.UserInfo("sitea-sync", "pw"),
			nats.Name(ChildConnName("sitea", "instancesitea")))
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		defer nc.Close()
	}
	acc, err := s.ns.LookupAccount(childAccountName("sitea"))
	if err != nil {
		t.Fatal(err)
	}
	if acc.JetStreamEnabled() {
		t.Error("a child's account must have no JetStream of its own")
	}
	if n := acc.NumLocalConnections(); n != 3 {
		t.Errorf("%d connections in sitea's account, want 3", n)
	}
	// Its own imports, plus what nats-server gives every account (system requests).
	if n, own := acc.NumServiceImports(), len(childServices("sitea")); n < own || n > own+4 {
		t.Errorf("%d service imports in sitea's account, want its %d and at most the system's few", n, own)
	}
	if n := s.ns.GlobalAccount().NumLocalConnections(); n != 0 {
		t.Errorf("%d connections in the node's account, want none of the child's", n)
	}
}
