package matrix

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestMautrixLogRedacted feeds the bridge what mautrix logs for a failed send: the request
// body, a URL with a query and an error answer with a body must not come out.
func TestMautrixLogRedacted(t *testing.T) {
	var out bytes.Buffer
	log := zerologToSlog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	log.Error().
		Str("error", "HTTP 502: <html>MARKER in the proxy's page</html>").
		Str("method", "PUT").
		Str("url", "http://hs.example/_matrix/client/v3/rooms/!r:hs/send/m.room.message/7?ts=MARKER").
		RawJSON("req_body", []byte(`{"body":"MARKER personal data","msgtype":"m.text"}`)).
		Str("resp_body", "MARKER").
		Msg("Request failed")
	log.Warn().Str("url", "http://hs.example/_matrix/client/v3/sync?filter=MARKER").Msg("Request canceled")

	got := out.String()
	if strings.Contains(got, "MARKER") {
		t.Errorf("the log holds the marker:\n%s", got)
	}
	for _, want := range []string{"level=ERROR", "Request failed", "HTTP 502 (body not logged)", "/send/m.room.message/7", "level=DEBUG msg=\"Request canceled\""} {
		if !strings.Contains(got, want) {
			t.Errorf("the log lacks %q:\n%s", want, got)
		}
	}
}

// TestMautrixLogLevel: mautrix's debug logging (every request, with its body) is off.
func TestMautrixLogLevel(t *testing.T) {
	var out bytes.Buffer
	log := zerologToSlog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if log.GetLevel() != zerolog.InfoLevel {
		t.Errorf("mautrix logs at %s", log.GetLevel())
	}
}
