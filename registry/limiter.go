package registry

import "github.com/outpost-edge/outpost/events"

// LoginLimiter is the registry's count of failed logins per client address, for
// the node's other sign-ins (the status page) to share: a guesser gets one
// budget across them, not one per door.
func (r *Registry) LoginLimiter() *events.LoginLimiter { return r.limiter }
