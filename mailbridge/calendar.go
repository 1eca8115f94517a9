package mailbridge

import (
	"strings"
	"time"
)

// maxCalendarEvents is how many events of one invitation are shown.
const maxCalendarEvents = 10

// calendarLines returns one line per event of an iCalendar object (RFC 5545): what it is
// (an invitation, a cancellation, a reply), its summary, when, where and who organizes it.
// The invitation itself is attached as it came, for calendars to import.
func calendarLines(data []byte) []string {
	s := strings.ToValidUTF8(string(data), "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.NewReplacer("\n ", "", "\n\t", "").Replace(s) // unfold
	method := ""
	var out []string
	var ev map[string]string
	var params map[string]string
	for _, line := range strings.Split(s, "\n") {
		nameParams, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name, ps, _ := strings.Cut(nameParams, ";")
		name = strings.ToUpper(strings.TrimSpace(name))
		switch {
		case name == "METHOD" && ev == nil:
			method = strings.ToUpper(strings.TrimSpace(value))
		case name == "BEGIN" && strings.EqualFold(strings.TrimSpace(value), "VEVENT"):
			ev, params = map[string]string{}, map[string]string{}
		case name == "END" && strings.EqualFold(strings.TrimSpace(value), "VEVENT") && ev != nil:
			if len(out) < maxCalendarEvents {
				out = append(out, eventLine(method, ev, params))
			}
			ev = nil
		case ev != nil:
			if _, seen := ev[name]; !seen {
				ev[name], params[name] = unescapeICal(value), ps
			}
		}
	}
	return out
}

func eventLine(method string, ev, params map[string]string) string {
	kind := "event"
	switch method {
	case "REQUEST":
		kind = "invitation"
	case "CANCEL":
		kind = "cancelled"
	case "REPLY":
		kind = "reply to an invitation"
	case "COUNTER":
		kind = "counter-proposal"
	}
	summary := ev["SUMMARY"]
	if summary == "" {
		summary = "(no title)"
	}
	line := kind + ": " + summary
	if start := icalTime(ev["DTSTART"], params["DTSTART"]); start != "" {
		line += ", " + start
		if end := icalTime(ev["DTEND"], params["DTEND"]); end != "" {
			line += " to " + end
		}
	}
	if loc := ev["LOCATION"]; loc != "" {
		line += ", at " + loc
	}
	if org := ev["ORGANIZER"]; org != "" {
		line += ", organized by " + strings.TrimPrefix(strings.TrimPrefix(org, "mailto:"), "MAILTO:")
	}
	return clean(line, false)
}

// icalTime renders a DATE or DATE-TIME value with its time zone.
func icalTime(v, params string) string {
	v = strings.TrimSpace(v)
	tz := ""
	for _, p := range strings.Split(params, ";") {
		if k, val, ok := strings.Cut(p, "="); ok && strings.EqualFold(k, "TZID") {
			tz = strings.Trim(val, `"`)
		}
	}
	if t, err := time.Parse("20060102T150405Z", v); err == nil {
		return t.Format("2006-01-02 15:04 UTC")
	}
	if t, err := time.Parse("20060102T150405", v); err == nil {
		if tz != "" {
			return t.Format("2006-01-02 15:04") + " (" + tz + ")"
		}
		return t.Format("2006-01-02 15:04")
	}
	if t, err := time.Parse("20060102", v); err == nil {
		return t.Format("2006-01-02")
	}
	return v
}

func unescapeICal(v string) string {
	return strings.NewReplacer(`\n`, " ", `\N`, " ", `\,`, ",", `\;`, ";", `\\`, `\`).Replace(strings.TrimSpace(v))
}
