package events

// A replicated change reaches a registry over HTTP like a client's. These headers,
// accepted only from an authenticated replication writer, say where it came from so
// that the event it causes carries Origin and From.
const (
	// ReplicaUser is the user name of a node's own replication workers.
	ReplicaUser = "outpost-internal"
	// HeaderFrom names the neighbour a replicated change came from.
	HeaderFrom = "Outpost-From"
	// HeaderOrigin names the node where a replicated change was first made.
	HeaderOrigin = "Outpost-Origin"
)
