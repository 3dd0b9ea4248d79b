package pipeline

import (
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// AlwaysSchedule is the schedule of a link that is always open.
const AlwaysSchedule = "* * * * *"

// Window says when a link may move content: from each occurrence of a cron schedule,
// for a fixed length. It is computed from the schedule and the clock, so a restart
// cannot lose whether it is open.
type Window struct {
	schedule events.Schedule
	length   time.Duration
	always   bool
	// err is why a window from settings could not be built: such a window never
	// opens on its own, and the link reports err.
	err error
}

// NewWindow parses a 5-field cron schedule (events.ParseSchedule: no descriptors,
// none that never fires). The default schedule with no length is always open.
func NewWindow(schedule string, length time.Duration) (Window, error) {
	if schedule == AlwaysSchedule && length == 0 {
		return Window{always: true}, nil
	}
	s, err := events.ParseSchedule(schedule)
	if err != nil {
		return Window{}, err
	}
	if length <= 0 {
		return Window{}, fmt.Errorf("sync window: required with schedule %q", schedule)
	}
	return Window{schedule: s, length: length}, nil
}

// BrokenWindow is the window of a link whose settings hold a schedule NewWindow
// refused (stored before it was checked, or written around the checks): it stays
// closed except when forced (`sync now`), and Err says why, for the status.
func BrokenWindow(err error) Window { return Window{err: err} }

// Err is why the window's settings were refused; nil for a working window.
func (w Window) Err() error { return w.err }

// Always reports whether the window never closes.
func (w Window) Always() bool { return w.always }

// Length is how long each window stays open.
func (w Window) Length() time.Duration { return w.length }

// isZero reports a Window nobody set.
func (w Window) isZero() bool { return !w.always && w.err == nil && w.schedule.IsZero() }

// At says whether the window is open at t, and gives the bounds of the window that is
// open then or, if none, of the next one. A broken window is closed with no next one
// (zero bounds). At does a bounded amount of work: a schedule that parsed fires
// within a year, and the zero schedule never.
func (w Window) At(t time.Time) (open bool, start, end time.Time) {
	if w.always {
		return true, time.Time{}, time.Time{}
	}
	if w.schedule.IsZero() {
		return false, time.Time{}, time.Time{}
	}
	// The earliest occurrence after t-length is the only one whose window can hold t.
	start = w.schedule.Next(t.Add(-w.length).Add(-time.Second))
	if start.IsZero() {
		return false, time.Time{}, time.Time{}
	}
	if !start.After(t) && t.Before(start.Add(w.length)) {
		return true, start, start.Add(w.length)
	}
	if !start.After(t) {
		if start = w.schedule.Next(t); start.IsZero() {
			return false, time.Time{}, time.Time{}
		}
	}
	return false, start, start.Add(w.length)
}

// previousLookBack bounds how far back Previous searches: a schedule that parsed
// fires at least once a year.
const previousLookBack = 400 * 24 * time.Hour

// Previous returns the bounds of the last window that started at or before t.
func (w Window) Previous(t time.Time) (start, end time.Time, ok bool) {
	if w.always || w.schedule.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	// cron has no Prev: walk forward from a bounded look-back. Next always moves
	// forward or returns zero, so each walk ends.
	for back := w.length + time.Hour; ; back *= 2 {
		back = min(back, previousLookBack)
		var last time.Time
		for s := w.schedule.Next(t.Add(-back)); !s.IsZero() && !s.After(t); s = w.schedule.Next(s) {
			last = s
		}
		if !last.IsZero() {
			return last, last.Add(w.length), true
		}
		if back == previousLookBack {
			return time.Time{}, time.Time{}, false
		}
	}
}

// AllowedLag is how long a link on this window may go without a sync at t: from
// the start of the window before the one open at t (or the next one) to the end of
// that one, as a link that syncs once in each window can. Zero for a link that is
// always open; ok is false for a broken schedule. Alert rules compare the time
// since the last sync with it.
func (w Window) AllowedLag(t time.Time) (lag time.Duration, ok bool) {
	if w.always {
		return 0, true
	}
	_, start, end := w.At(t)
	if start.IsZero() {
		return 0, false
	}
	prev, _, ok := w.Previous(start.Add(-time.Second))
	if !ok {
		return end.Sub(t), true // the first window: due by its end
	}
	return end.Sub(prev), true
}
