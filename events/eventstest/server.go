package eventstest

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
)

// StartServer starts a node's NATS server for a test, as a node does
// (events.StartServer: JetStream, the gateway's accounts), and connects to it as
// the node. Defaults: store in t.TempDir(), 127.0.0.1 port 0, name "test". Both
// close when the test ends; Shutdown and Close may be called earlier (a test that
// reopens a stopped node's store must let go of it before the node restarts).
// Tests inside package events cannot import this: theirs is startLog.
func StartServer(t testing.TB, cfg events.ServerConfig) (*events.Server, *nats.Conn) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	srv, err := events.StartServer(cfg)
	if err != nil {
		t.Fatalf("start NATS server in %s: %v", cfg.Dir, err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatalf("connect to NATS server %s: %v", cfg.Name, err)
	}
	t.Cleanup(nc.Close)
	return srv, nc
}
