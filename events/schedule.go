package events

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Sync schedules are plain 5-field cron expressions (minute hour day-of-month month
// day-of-week). They live here, beside the ISO 8601 durations, because both the
// hierarchy (which validates settings at the root) and the pipeline (which opens
// windows by them) read them.

// ErrSchedule is wrapped by every refusal of a sync schedule.
var ErrSchedule = errors.New("sync schedule")

// scheduleFields is the one form accepted: cron's descriptors (@every 6h, @daily),
// seconds fields and time zone prefixes are refused. @every in particular is a
// delay from "now", so a window computed from the clock by it never opens.
const scheduleFields = "minute hour day-of-month month day-of-week, such as \"0 2 * * *\""

var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Schedule is a parsed sync schedule that fires in every calendar year.
type Schedule struct {
	spec cron.Schedule
}

// ParseSchedule parses a 5-field cron expression and refuses one that does not fire
// at least once in every calendar year: "0 0 30 2 *" never fires, and "0 0 29 2 *"
// fires only in leap years, which for a sync window means closed for years.
func ParseSchedule(spec string) (Schedule, error) {
	refuse := func(format string, a ...any) (Schedule, error) {
		return Schedule{}, fmt.Errorf("%w %q: %s", ErrSchedule, spec, fmt.Sprintf(format, a...))
	}
	fields := strings.Fields(spec)
	switch {
	case strings.HasPrefix(strings.TrimSpace(spec), "@"):
		return refuse("descriptors such as @every, @daily or @hourly are not accepted; want a plain 5-field cron expression (%s)", scheduleFields)
	case strings.Contains(spec, "TZ="):
		return refuse("time zone prefixes are not accepted (windows follow the node's clock); want a plain 5-field cron expression (%s)", scheduleFields)
	case len(fields) != 5:
		return refuse("has %d fields; want a 5-field cron expression (%s)", len(fields), scheduleFields)
	}
	s, err := scheduleParser.Parse(spec)
	if err != nil {
		return refuse("%v; want a plain 5-field cron expression (%s)", err, scheduleFields)
	}
	// The Gregorian calendar has 14 kinds of year (weekday of 1 January, leap or
	// not); any 28 consecutive years of one century hold them all.
	firing := 0
	for y := scheduleCheckFrom; y < scheduleCheckFrom+28; y++ {
		start := time.Date(y, time.January, 1, 0, 0, 0, 0, time.UTC)
		if next := s.Next(start.Add(-time.Second)); !next.IsZero() && next.Year() == y {
			firing++
		}
	}
	switch {
	case firing == 0:
		return refuse("never fires: no date matches its day of month, month and day of week")
	case firing < 28:
		return refuse("does not fire every year (only in %d of 28), so the link would stay closed for years; a sync schedule must open at least once a year", firing)
	}
	return Schedule{spec: s}, nil
}

// scheduleCheckFrom starts the 28 years ParseSchedule checks (none of them a
// century year that is not a leap year).
const scheduleCheckFrom = 2001

// Next returns the first time the schedule fires after t. A schedule from
// ParseSchedule always finds one within about a year; the zero Schedule, none
// (zero time).
func (s Schedule) Next(t time.Time) time.Time {
	if s.spec == nil {
		return time.Time{}
	}
	return s.spec.Next(t)
}

// IsZero reports whether s was not made by ParseSchedule.
func (s Schedule) IsZero() bool { return s.spec == nil }
