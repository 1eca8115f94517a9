package mailbridge_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/mailbridge"
)

// TestCorpusArrives: every mail of the malformed and hostile corpus in testdata is accepted
// over one connection, which stays in sync, and arrives in the room as one message with the
// gateway's header, a body free of control characters, and HTML with no script, handler or
// image from elsewhere. (TestConvert asserts each one's content.)
func TestCorpusArrives(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver and sends mail into it")
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil || len(files) < 20 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	s := newScene(t, mailbridge.Options{})
	inbox := s.inbox
	c := dial(t, s.addr)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := send(c, "a@b.example", []string{"cases@agency.example"}, string(raw)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if err := send(c, "a@b.example", []string{"cases@agency.example"}, mail("a@b.example", "Corpus marker", "corpus-marker@b.example", "end")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, subjectLine("Corpus marker"))
	posts := 0
	for _, e := range inbox.Events() {
		mc := message(e)
		if mc.MsgType != event.MsgText || !strings.HasPrefix(mc.Body, "From: ") {
			continue
		}
		posts++
		if !strings.Contains(mc.Body, "\nSender check: ") || strings.ContainsFunc(mc.Body, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' }) {
			t.Errorf("body %q", mc.Body)
		}
		lower := strings.ToLower(mc.FormattedBody)
		for _, bad := range []string{"<script", "javascript:", "onerror", "onload", "onclick", "<iframe", "//evil.example", "tracker.example"} {
			if strings.Contains(lower, bad) {
				t.Errorf("formatted_body has %q: %s", bad, mc.FormattedBody)
			}
		}
		for _, img := range strings.Split(lower, "<img")[1:] {
			if !strings.HasPrefix(strings.TrimSpace(img), `src="mxc://`+strings.ToLower(s.srv.ServerName)+"/") {
				t.Errorf("image not from this homeserver: <img%s", img[:min(len(img), 80)])
			}
		}
	}
	if posts != len(files)+1 {
		t.Errorf("%d mails posted, want %d", posts, len(files)+1)
	}
}
