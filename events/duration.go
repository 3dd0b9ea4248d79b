package events

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// ISO 8601 durations as the product this replaces writes them: P2D, PT3H, P1DT12H,
// P1W. Years and months are refused: their length depends on the calendar.
var isoDuration = regexp.MustCompile(`^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$`)

// ParseDuration parses an ISO 8601 duration such as P2D or PT3H.
func ParseDuration(s string) (time.Duration, error) {
	m := isoDuration.FindStringSubmatch(s)
	if m == nil || s == "P" || s == "PT" || (len(s) > 0 && s[len(s)-1] == 'T') {
		return 0, fmt.Errorf("duration %q: want ISO 8601 such as P2D, PT3H or P1DT12H (weeks, days, hours, minutes, seconds)", s)
	}
	units := []time.Duration{7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute, time.Second}
	var d time.Duration
	for i, u := range units {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil || n > int64(1<<62)/int64(u) {
			return 0, fmt.Errorf("duration %q: too long", s)
		}
		d += time.Duration(n) * u
	}
	return d, nil
}

// FormatDuration writes d in the ISO 8601 form ParseDuration reads.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "PT0S"
	}
	s := "P"
	if days := d / (24 * time.Hour); days > 0 {
		s += strconv.FormatInt(int64(days), 10) + "D"
		d -= days * 24 * time.Hour
	}
	if d == 0 {
		return s
	}
	s += "T"
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Hour, "H"}, {time.Minute, "M"}, {time.Second, "S"}} {
		if n := d / u.d; n > 0 {
			s += strconv.FormatInt(int64(n), 10) + u.c
			d -= n * u.d
		}
	}
	return s
}
