package node

import (
	"fmt"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
)

// gcStatus is the status's account of the last garbage collection that was not a
// dry run, and a GC_FAILED detail when it stopped early.
func gcStatus(reg *registry.Registry) (*hierarchy.GCStatus, []hierarchy.Detail) {
	_, last := reg.LastGC()
	next := reg.NextGC()
	if last == nil && next.IsZero() {
		return nil, nil
	}
	st := &hierarchy.GCStatus{Next: next}
	if last == nil {
		return st, nil
	}
	st.Finished, st.ReclaimedBytes, st.ReclaimedBlobs = last.Finished, last.Reclaimed(), last.Blobs
	st.ReferrerEntries, st.Parts, st.Error = last.ReferrerEntries, last.Parts, last.Error
	if last.Error == "" {
		return st, nil
	}
	return st, []hierarchy.Detail{{Code: "GC_FAILED", Time: last.Finished, Message: fmt.Sprintf(
		"the last garbage collection stopped early after reclaiming %d bytes: %s", last.Reclaimed(), last.Error)}}
}
