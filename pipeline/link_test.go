package pipeline

import (
	"fmt"
	"testing"

	"github.com/outpost-edge/outpost/events"
)

func TestSegmentsCoalesceByTagAndDigestAndStopAtRepositoryDeletes(t *testing.T) {
	ev := func(action events.Action, repo, tag, digest string) *events.Delivery {
		return &events.Delivery{Event: &events.Event{Action: action, Repository: repo, Tag: tag, Digest: digest}}
	}
	ds := []*events.Delivery{
		ev(events.ActionPush, "a", "1", "d1"),
		ev(events.ActionPush, "a", "2", "d2"),
		ev(events.ActionPush, "a", "1", "d3"), // the same tag moved: one copy
		ev(events.ActionTagDelete, "a", "2", "d2"),
		ev(events.ActionPush, "a", "", "d4"),
		ev(events.ActionManifestDelete, "a", "", "d4"), // the same digest: one group
		ev(events.ActionRepositoryDelete, "a", "", ""),
		ev(events.ActionPush, "a", "1", "d5"), // after the barrier: a new segment
	}
	got := segments(ds)
	var shape []string
	for _, seg := range got {
		s := ""
		for _, grp := range seg {
			s += fmt.Sprintf("[%d:%s]", len(grp), grp[len(grp)-1].Event.Digest)
		}
		shape = append(shape, s)
	}
	want := []string{"[2:d3][2:d2][2:d4]", "[1:]", "[1:d5]"}
	if fmt.Sprint(shape) != fmt.Sprint(want) {
		t.Errorf("segments = %v, want %v", shape, want)
	}
}
