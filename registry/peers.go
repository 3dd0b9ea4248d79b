package registry

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"

	"github.com/outpost-edge/outpost/events"
)

// Replication writes reach a registry over HTTP like any client's, identified by
// basic auth: the node's own workers with the process's internal credential
// (events.ReplicaUser), a child pushing upstream with its sync token. They say which
// node the change came from and where it was first made, so the event log can tell.

// PeerAuthenticator says which child, if any, a sync-token login belongs to; an
// empty node with ok is a known client (the root's admin).
type PeerAuthenticator interface {
	AuthenticatePeer(user, password string) (node string, ok bool)
}

// replica is who wrote a change that arrived by replication.
type replica struct {
	from, origin string
	internal     bool
}

type replicaKey struct{}

func replicaFrom(ctx context.Context) (replica, bool) {
	r, ok := ctx.Value(replicaKey{}).(replica)
	return r, ok
}

// identify reads a request's basic auth. A wrong credential is refused, never taken
// for anonymous.
func (r *Registry) identify(req *http.Request) (*http.Request, error) {
	user, pw, ok := req.BasicAuth()
	if !ok {
		return req, nil
	}
	var rep replica
	switch {
	case user == events.ReplicaUser && r.cfg.InternalPassword != "" &&
		subtle.ConstantTimeCompare([]byte(pw), []byte(r.cfg.InternalPassword)) == 1:
		rep = replica{from: req.Header.Get(events.HeaderFrom), origin: req.Header.Get(events.HeaderOrigin), internal: true}
	case r.cfg.Peers != nil:
		node, ok := r.cfg.Peers.AuthenticatePeer(user, pw)
		if !ok {
			return nil, fmt.Errorf("user %q: unknown user or wrong password", user)
		}
		if node == "" {
			return req, nil // a known client, not a replica
		}
		rep = replica{from: node, origin: req.Header.Get(events.HeaderOrigin)}
	default:
		return nil, fmt.Errorf("user %q: unknown user or wrong password", user)
	}
	if rep.origin == "" {
		rep.origin = rep.from
	}
	return req.WithContext(context.WithValue(req.Context(), replicaKey{}, rep)), nil
}
