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
