package matrix

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/rs/zerolog"
)

// zerologToSlog returns a zerolog logger that writes into l, so that mautrix's logs reach the
// caller's slog handler and samtal's users never meet zerolog.
func zerologToSlog(l *slog.Logger) zerolog.Logger {
	return zerolog.New(slogWriter{l}).Level(zerolog.InfoLevel)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		w.l.Info(string(p))
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
	if errText, _ := fields[zerolog.ErrorFieldName].(string); level > slog.LevelDebug && strings.Contains(errText, "context canceled") {
		// A request cut short because we stopped is not a problem worth a warning.
		level = slog.LevelDebug
	}
	delete(fields, zerolog.LevelFieldName)
	delete(fields, zerolog.MessageFieldName)
	attrs := make([]slog.Attr, 0, len(fields)+1)
	attrs = append(attrs, slog.String("from", "mautrix"))
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	w.l.LogAttrs(context.Background(), level, msg, attrs...)
	return len(p), nil
}
