package pipeline

import (
	"testing"
	"time"
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
