// Package nodetest starts Outpost nodes inside the test's process, through the node
// library as `outpost serve` does: a root, sites under it, several roots.
package nodetest

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/node"
)

// AdminToken is the admin token of the roots Config makes.
const AdminToken = "nodetest-admin-token-0123456789"

// Config is a root for a test: both listeners on 127.0.0.1 port 0, data in a fresh
// t.TempDir(), the admin token AdminToken, retries shortened. Give it a
// ConnectionString to make it a site; change anything else before Start.
func Config(t testing.TB) node.Config {
	cfg := node.DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.HTTPAddr, cfg.GatewayAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.OperatorToken = AdminToken
	cfg.StatusInterval, cfg.ActivateRetry, cfg.ActivateRetryMax, cfg.RetryAfter = time.Second, 100*time.Millisecond, time.Second, time.Second
	cfg.Scrub.Interval = 0
	return cfg
}

// Start builds a node from cfg and runs it until the test ends; it returns once the
// node serves (a site: once its parent activated it). Its log is shown if the test
// fails. Stop it earlier with Shutdown.
func Start(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	logs := &lockedBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.Notices = logs
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("node %s: %v", n.Name(), err)
		}
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("node %s stopped: %v", n.Name(), err)
			}
		default: // Start took it
		}
		if t.Failed() {
			t.Logf("log of node %s:\n%s", n.Name(), logs.String())
		}
	})
	select {
	case <-n.Serving():
		return n
	case err := <-ran:
		t.Fatalf("node %s stopped before serving: %v\n%s", n.Name(), err, logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("node %s not serving after a minute:\n%s", n.Name(), logs.String())
	}
	return nil
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
