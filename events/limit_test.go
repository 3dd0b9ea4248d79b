package events

import (
	"testing"

	"github.com/nats-io/nats.go"
)

type fixedChild struct{ ok bool }

func (f fixedChild) AuthenticateChild(_, _, _ string) (ChildLogin, bool) {
	return ChildLogin{Child: "sitea", Active: true}, f.ok
}

// TestGatewayLimitsFailedLogins: after a burst of refused logins from one address,
// even a good one is refused for a while, without asking the authenticator.
func TestGatewayLimitsFailedLogins(t *testing.T) {
	srv, err := StartServer(ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "limits"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	login := func() error {
		nc, err := nats.Connect("nats://"+srv.Addr().String(), nats.UserInfo("sitea-sync", "pw"),
			nats.Name(ChildConnName("sitea", "0123456789abcdef")), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return err
	}
	srv.SetChildAuthenticator(fixedChild{ok: true})
	if err := login(); err != nil {
		t.Fatalf("good login before the burst: %v", err)
	}
	srv.SetChildAuthenticator(fixedChild{ok: false})
	for range FailedLoginBurst {
		if err := login(); err == nil {
			t.Fatal("a refused login connected")
		}
	}
	srv.SetChildAuthenticator(fixedChild{ok: true})
	if err := login(); err == nil {
		t.Fatal("a good login right after the burst connected; want it refused until the limit refills")
	}
}
