package matrix

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"regexp"
	"strings"

	"github.com/rs/zerolog"
)

// zerologToSlog returns a zerolog logger that writes into l, so that mautrix's logs reach the
// caller's slog handler and samtal's users never meet zerolog.
//
// What mautrix logs passes through redact first: its request logging puts the body of a
// request (a message's plaintext, a password) into req_body whenever a request fails, and
// sync URLs carry the whole filter.
func zerologToSlog(l *slog.Logger) zerolog.Logger {
	return zerolog.New(slogWriter{l}).Level(zerolog.InfoLevel)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		// Not one of zerolog's JSON lines: say that something was logged, not what.
		w.l.Warn("unreadable log line from mautrix", "from", "mautrix", "bytes", len(p))
		return len(p), nil
	}
	level := slog.LevelInfo
	switch fields[zerolog.LevelFieldName] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error", "fatal", "panic":
		level = slog.LevelError
	}
	msg, _ := fields[zerolog.MessageFieldName].(string)
	errText, _ := fields[zerolog.ErrorFieldName].(string)
	if level > slog.LevelDebug && (strings.Contains(errText, "context canceled") || msg == "Request canceled") {
		// A request cut short because we stopped is not a problem worth a warning.
		level = slog.LevelDebug
	}
	delete(fields, zerolog.LevelFieldName)
	delete(fields, zerolog.MessageFieldName)
	attrs := make([]slog.Attr, 0, len(fields)+1)
	attrs = append(attrs, slog.String("from", "mautrix"))
	for k, v := range fields {
		if v, keep := redact(k, v); keep {
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	w.l.LogAttrs(context.Background(), level, msg, attrs...)
	return len(p), nil
}

// httpErrorBody matches mautrix's text for an error answer that was not Matrix JSON, "HTTP 502:
// <the response body>".
var httpErrorBody = regexp.MustCompile(`(HTTP \d{3}): .*`)

// redact returns what of a mautrix log field may be logged, and false to leave it out. Bodies
// of requests and responses never are (at any level: a failed send would log the message in
// plaintext); URLs lose their query, which for sync is a long filter and for some endpoints
// carries user input; a non-JSON error answer loses its body.
func redact(key string, v any) (any, bool) {
	switch {
	case key == "body" || key == "content" || strings.HasSuffix(key, "_body") || strings.HasSuffix(key, "_content"):
		return nil, false
	case key == "url":
		s, _ := v.(string)
		u, err := url.Parse(s)
		if err != nil {
			return "<unparsable URL>", true
		}
		u.RawQuery, u.Fragment, u.User = "", "", nil
		return u.String(), true
	case key == zerolog.ErrorFieldName:
		if s, ok := v.(string); ok {
			return httpErrorBody.ReplaceAllString(s, "$1 (body not logged)"), true
		}
	}
	return v, true
}
