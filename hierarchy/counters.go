package hierarchy

// LinkCounters is what a node's link to its parent did since the node's process
// started, reported with its status so that its parent and the root can export
// them per child (node/linkmetrics.go). They restart at 0 with the process, as
// Prometheus counters do.
type LinkCounters struct {
	// AppliedDown and AppliedUp count messages applied each way.
	AppliedDown uint64 `json:"appliedDown"`
	AppliedUp   uint64 `json:"appliedUp"`
	// CopyErrorsDown and CopyErrorsUp count failed copies each way (each retried).
	CopyErrorsDown uint64 `json:"copyErrorsDown"`
	CopyErrorsUp   uint64 `json:"copyErrorsUp"`
	// Conflicts counts writes made at the node or below that the parent's order
	// overwrote (TAG_CONFLICT).
	Conflicts uint64 `json:"conflicts"`
}
