package pipeline

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/events"
)

func TestWindowOpensOnScheduleForItsLength(t *testing.T) {
	w, err := NewWindow("0 2 * * *", 3*time.Hour) // 02:00 to 05:00 every day
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		at         string
		open       bool
		start, end string
	}{
		{"01:59", false, "02:00", "05:00"},
		{"02:00", true, "02:00", "05:00"},
		{"04:59", true, "02:00", "05:00"},
		{"05:00", false, "02:00+1d", "05:00+1d"},
		{"23:00", false, "02:00+1d", "05:00+1d"},
	} {
		at := clock(day, c.at)
		open, start, end := w.At(at)
		if open != c.open || !start.Equal(clock(day, c.start)) || !end.Equal(clock(day, c.end)) {
			t.Errorf("At(%s) = %v %s..%s, want %v %s..%s", c.at, open, start.Format(time.DateTime), end.Format(time.DateTime), c.open, c.start, c.end)
		}
	}
	start, end, ok := w.Previous(clock(day, "23:00"))
	if !ok || !start.Equal(clock(day, "02:00")) || !end.Equal(clock(day, "05:00")) {
		t.Errorf("Previous(23:00) = %s..%s %v", start, end, ok)
	}
	always, _ := NewWindow(AlwaysSchedule, 0)
	if open, _, _ := always.At(day); !open || !always.Always() {
		t.Error("the default schedule is always open")
	}
	if _, err := NewWindow("0 2 * * *", 0); err == nil {
		t.Error("a schedule without a window length was accepted")
	}
	if _, err := NewWindow("at two", time.Hour); err == nil {
		t.Error("a bad schedule was accepted")
	}
}

// clock reads "15:04" or "15:04+1d" on day.
func clock(day time.Time, s string) time.Time {
	add := 0
	if len(s) > 5 {
		add = 1
		s = s[:5]
	}
	hm, _ := time.Parse("15:04", s)
	return day.AddDate(0, 0, add).Add(time.Duration(hm.Hour())*time.Hour + time.Duration(hm.Minute())*time.Minute)
}

// TestWindowRefusesSchedulesThatAreNotPlainOrNeverOpen covers the whole class: cron
// descriptors (@every computes from "now", so a window read from the clock by it
// never opens), other field counts, time zone prefixes, and schedules that never
// fire or not every year. Each refusal says why. Every case, accepted or refused,
// answers quickly: At and Previous do bounded work.
func TestWindowRefusesSchedulesThatAreNotPlainOrNeverOpen(t *testing.T) {
	for _, c := range []struct{ schedule, want string }{
		{"@every 6h", "descriptors such as @every"},
		{"@daily", "descriptors such as @every"},
		{"@hourly", "descriptors such as @every"},
		{"@reboot", "descriptors such as @every"},
		{"@midnight", "descriptors such as @every"},
		{" @weekly", "descriptors such as @every"},
		{"0 0 2 * * *", "has 6 fields; want a 5-field cron"},
		{"0 2 * *", "has 4 fields; want a 5-field cron"},
		{"", "has 0 fields; want a 5-field cron"},
		{"CRON_TZ=UTC 0 2 * * *", "time zone prefixes"},
		{"TZ=UTC 0 2 * *", "time zone prefixes"},
		{"0 0 30 2 *", "never fires"},
		{"0 0 31 4 *", "never fires"},
		{"0 0 31 2,4,6,9,11 *", "never fires"},
		{"0 0 30,31 2 *", "never fires"},
		// Feb 29 fires only in leap years: refused, as a window closed for up to
		// four years (eight across 2100) is no sync window. So is any schedule
		// that misses a year.
		{"0 0 29 2 *", "does not fire every year (only in 7 of 28)"},
		{"0 0 29-31 2 *", "does not fire every year"},
		{"61 * * * *", "end of range (61) above maximum (59)"},
		{"at two", "has 2 fields"},
	} {
		began := time.Now()
		_, err := NewWindow(c.schedule, time.Hour)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, events.ErrSchedule) {
			t.Errorf("NewWindow(%q) = %v, want an events.ErrSchedule saying %q", c.schedule, err, c.want)
		}
		if took := time.Since(began); took > 100*time.Millisecond {
			t.Errorf("NewWindow(%q) took %s", c.schedule, took)
		}
	}
	// Schedules that fire every year, some rarely or only when day of month and day
	// of week meet (either matches when both are set, as in cron).
	from := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		schedule string
		next     time.Time
	}{
		{"0 0 28 2 *", time.Date(2027, 2, 28, 0, 0, 0, 0, time.UTC)},
		{"0 0 29 2 1", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)}, // Feb 29 or any Monday in February
		{"0 0 31 * *", time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)},
		{"0 0 1 1 *", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"*/5 * * * *", time.Date(2026, 11, 27, 15, 5, 0, 0, time.UTC)},
		{"0 2 * * 1-5", time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)},
	} {
		w, err := NewWindow(c.schedule, time.Hour)
		if err != nil {
			t.Errorf("NewWindow(%q): %v", c.schedule, err)
			continue
		}
		began := time.Now()
		open, start, _ := w.At(from)
		if open || !start.Equal(c.next) {
			t.Errorf("NewWindow(%q).At(%s) = %v %s, want closed until %s", c.schedule, from, open, start, c.next)
		}
		if _, _, ok := w.Previous(from); !ok {
			t.Errorf("NewWindow(%q).Previous(%s): none within a year", c.schedule, from)
		}
		if took := time.Since(began); took > 100*time.Millisecond {
			t.Errorf("NewWindow(%q): At and Previous took %s", c.schedule, took)
		}
	}
}

// TestBrokenWindowStaysClosedAndSaysWhy: the window a link gets from settings that
// were stored without the checks never opens on its own, answers at once, and
// carries the refusal.
func TestBrokenWindowStaysClosedAndSaysWhy(t *testing.T) {
	_, err := NewWindow("0 0 30 2 *", time.Hour)
	w := BrokenWindow(err)
	now := time.Now()
	if open, start, end := w.At(now); open || !start.IsZero() || !end.IsZero() {
		t.Errorf("broken window At = %v %s %s, want closed with no next window", open, start, end)
	}
	if _, _, ok := w.Previous(now); ok {
		t.Error("broken window has a previous window")
	}
	if w.Err() == nil || !strings.Contains(w.Err().Error(), "never fires") || w.Always() {
		t.Errorf("broken window: Err %v, Always %v", w.Err(), w.Always())
	}
	// The zero Window (no schedule) is closed too, not a hang.
	if open, _, _ := (Window{length: time.Hour}).At(now); open {
		t.Error("a window without a schedule is open")
	}
	if _, _, ok := (Window{length: time.Hour}).Previous(now); ok {
		t.Error("a window without a schedule has a previous window")
	}
}

func TestWindowAllowedLag(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	always, _ := NewWindow("* * * * *", 0)
	nightly, err := NewWindow("0 2 * * *", 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		w    Window
		t    string
		want time.Duration
	}{
		{always, "2026-11-27T12:00:00Z", 0},
		// Closed at noon: the next window ends 05:00 tomorrow, the one before started 02:00 today.
		{nightly, "2026-11-27T12:00:00Z", 27 * time.Hour},
		// Open at 03:00: this window ends 05:00, the one before started 02:00 yesterday.
		{nightly, "2026-11-27T03:00:00Z", 27 * time.Hour},
	} {
		if got, ok := c.w.AllowedLag(at(c.t)); !ok || got != c.want {
			t.Errorf("AllowedLag(%s) = %s %v, want %s", c.t, got, ok, c.want)
		}
	}
	if _, ok := BrokenWindow(errors.New("bad")).AllowedLag(at("2026-11-27T12:00:00Z")); ok {
		t.Error("a broken window has an allowed lag")
	}
}
