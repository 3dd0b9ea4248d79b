package events

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrStoreWrite says a JetStream stream of the node could not write to its store.
// nats-server then refuses every later write to that stream until the process
// restarts; what was acknowledged before stays on disk.
var ErrStoreWrite = errors.New("event log: a stream could not write to the node's disk")

// Healthy checks JetStream, a member's cluster (a meta leader and a quorum: an
// ErrNoQuorum naming what is missing) and every stream's store. Its error names no
// path (the server's own text does): a write that failed for lack of space says so.
func (s *Server) Healthy() error {
	if !s.Running() {
		return errors.New("nats: jetstream not running")
	}
	// A member without a quorum cannot write: say which members are missing
	// rather than the server's own "not current" text.
	if err := s.ClusterStatus().Err(); err != nil {
		return err
	}
	return s.storeHealthy()
}

// storeHealthy checks every stream's store (and, in a cluster, that each is
// current with its leader).
func (s *Server) storeHealthy() error {
	h := s.ns.Healthz(&server.HealthzOptions{})
	if h == nil || h.Status == "ok" {
		return nil
	}
	if strings.Contains(h.Error, "no space left") || strings.Contains(h.Error, "disk quota exceeded") {
		return fmt.Errorf("%w: the disk was full; free space, then restart the node (acknowledged events are kept)", ErrStoreWrite)
	}
	if strings.Contains(h.Error, "write error") {
		return fmt.Errorf("%w: restart the node once the cause is fixed (see its log)", ErrStoreWrite)
	}
	return errors.New("nats: jetstream " + h.Status)
}

// NeedsRestart says whether a stream's store write failed for lack of space and
// the disk has minFree bytes free again: nats-server keeps such a stream refusing
// writes until its store is opened again, which (in nats-server v2.15) only a
// process restart does; acknowledged messages are kept on disk. While the disk is
// still full a restart would not help, and this says no.
func (s *Server) NeedsRestart(minFree uint64) error {
	// The store alone: a member that lost its quorum and its disk still needs it.
	err := s.storeHealthy()
	if err == nil || !errors.Is(err, ErrStoreWrite) || !strings.Contains(err.Error(), "disk was full") {
		return nil
	}
	cfg := s.ns.JetStreamConfig()
	if cfg == nil {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(cfg.StoreDir, &st); err != nil || st.Bavail*uint64(st.Bsize) < minFree {
		return nil
	}
	return fmt.Errorf("%w: the disk was full and has space again; restart the node to open the store again (acknowledged events are kept)", ErrStoreWrite)
}
