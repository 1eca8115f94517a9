package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestFindColleague: anna finds karin through the static directory, a chat is made and the
// hello arrives; the second run finds the same room; an unknown address is a not-found.
func TestFindColleague(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "anna")
	karin := srv.Client(t, "karin")
	people := filepath.Join(t.TempDir(), "people.csv")
	if err := os.WriteFile(people, []byte("karin.lund@agency-a.example,"+string(karin.UserID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg := config{Homeserver: srv.URL, User: "anna", Password: pw, DB: filepath.Join(t.TempDir(), "anna.db"),
		Static: people, Out: &out, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := run(t.Context(), cfg, "karin.lund@agency-a.example"); err != nil {
		t.Fatal(err)
	}
	first := out.String()
	if !strings.Contains(first, string(karin.UserID)) || !strings.Contains(first, "(new: true)") {
		t.Fatalf("first run printed %q", first)
	}
	out.Reset()
	if err := run(t.Context(), cfg, "karin.lund@agency-a.example"); err != nil {
		t.Fatal(err)
	}
	room := strings.Fields(strings.Split(first, "room ")[1])[0]
	if !strings.Contains(out.String(), "room "+room+" (new: false)") {
		t.Fatalf("second run printed %q, want the room %s again", out.String(), room)
	}
	if err := run(t.Context(), cfg, "nobody@agency-a.example"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("unknown address: %v, want ErrNotFound", err)
	}
}
