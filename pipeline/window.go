package pipeline

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// AlwaysSchedule is the schedule of a link that is always open.
const AlwaysSchedule = "* * * * *"

// Window says when a link may move content: from each occurrence of a cron schedule,
// for a fixed length. It is computed from the schedule and the clock, so a restart
// cannot lose whether it is open.
type Window struct {
	schedule cron.Schedule
	length   time.Duration
	always   bool
}

// NewWindow parses a 5-field cron schedule. The default schedule with no length is
// always open.
func NewWindow(schedule string, length time.Duration) (Window, error) {
	if schedule == AlwaysSchedule && length == 0 {
		return Window{always: true}, nil
	}
	s, err := cron.ParseStandard(schedule)
	if err != nil {
		return Window{}, fmt.Errorf("sync schedule %q: %w", schedule, err)
	}
	if length <= 0 {
		return Window{}, fmt.Errorf("sync window: required with schedule %q", schedule)
	}
	return Window{schedule: s, length: length}, nil
}

// Always reports whether the window never closes.
func (w Window) Always() bool { return w.always }

// Length is how long each window stays open.
func (w Window) Length() time.Duration { return w.length }

// At says whether the window is open at t, and gives the bounds of the window that is
// open then or, if none, of the next one.
func (w Window) At(t time.Time) (open bool, start, end time.Time) {
	if w.always {
		return true, time.Time{}, time.Time{}
	}
	// The earliest occurrence after t-length is the only one whose window can hold t.
	start = w.schedule.Next(t.Add(-w.length).Add(-time.Second))
	if !start.After(t) && t.Before(start.Add(w.length)) {
		return true, start, start.Add(w.length)
	}
	if !start.After(t) {
		start = w.schedule.Next(t)
	}
	return false, start, start.Add(w.length)
}

// Previous returns the bounds of the last window that started at or before t.
func (w Window) Previous(t time.Time) (start, end time.Time, ok bool) {
	if w.always {
		return time.Time{}, time.Time{}, false
	}
	// cron has no Prev: walk forward from a bounded look-back.
	for back := w.length + time.Hour; back <= 400*24*time.Hour; back *= 2 {
		var last time.Time
		for s := w.schedule.Next(t.Add(-back)); !s.After(t); s = w.schedule.Next(s) {
			last = s
		}
		if !last.IsZero() {
			return last, last.Add(w.length), true
		}
	}
	return time.Time{}, time.Time{}, false
}
