package replay

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseTime reads a time given on the command line: RFC 3339
// (2026-05-01T12:00:00Z, with any offset and fraction), a date
// (2026-05-01, midnight UTC), "now", or a duration before now with a minus
// sign: -90s, -15m, -1h30m, -2d (a day is 24 hours).
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, fmt.Errorf("empty time (use RFC 3339 like 2026-05-01T12:00:00Z, or relative like -1h)")
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := parseAgo(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("relative time %q: %w (use e.g. -90s, -15m, -1h30m, -2d)", s, err)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("time %q is neither RFC 3339 (2026-05-01T12:00:00Z) nor a date (2026-05-01) nor relative to now (-1h, -30m, -2d)", s)
}

// parseAgo parses a positive Go duration that may also use whole days (2d,
// 1d12h).
func parseAgo(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad number of days %q", s[:i])
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("double minus sign")
	}
	return days + d, nil
}
