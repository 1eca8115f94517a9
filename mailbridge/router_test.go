package mailbridge

import (
	"errors"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

func TestRouterMatch(t *testing.T) {
	r, err := NewRouter(
		Route{Address: "cases@agency.example", Room: "!cases:hs.example"},
		Route{Address: "registry@agency.example", Room: "#registry:hs.example", AllowSenders: []string{"system@agency.example", "@partner.example"}},
		Route{Address: "case-{id}@cases.example.se", Room: "#case-{id}:hs.example", Create: &matrix.RoomSpec{Preset: matrix.CaseRoom}},
		Route{Address: "postmaster@cases.example.se", Room: "!ops:hs.example"},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rcpt, room, sub string
		err             error
	}{
		{rcpt: "cases@agency.example", room: "!cases:hs.example"},
		{rcpt: "Cases@Agency.Example", room: "!cases:hs.example"},
		{rcpt: "cases+4711@agency.example", room: "!cases:hs.example", sub: "4711"},
		{rcpt: "registry@agency.example", room: "#registry:hs.example"},
		{rcpt: "case-4711@cases.example.se", room: "#case-4711:hs.example"},
		{rcpt: "CASE-AB.12@cases.example.se", room: "#case-ab.12:hs.example"},
		{rcpt: "case-4711+urgent@cases.example.se", room: "#case-4711:hs.example", sub: "urgent"},
		// postmaster@ for every routed domain (RFC 5321): the first static route, or an explicit one.
		{rcpt: "postmaster@agency.example", room: "!cases:hs.example"},
		{rcpt: "PostMaster@cases.example.se", room: "!ops:hs.example"},
		// No catch-all unless configured.
		{rcpt: "nobody@agency.example", err: ErrUnknownRecipient},
		{rcpt: "postmaster@elsewhere.example", err: ErrUnknownRecipient},
		{rcpt: "cases@agency.example.evil", err: ErrUnknownRecipient},
		{rcpt: "case-@cases.example.se", err: ErrUnknownRecipient},
		{rcpt: "case-a/b@cases.example.se", err: ErrUnknownRecipient},
		{rcpt: "case-4711:evil@cases.example.se", err: ErrUnknownRecipient},
		{rcpt: "", err: ErrUnknownRecipient},
		{rcpt: "@agency.example", err: ErrUnknownRecipient},
		{rcpt: "cases@", err: ErrUnknownRecipient},
	} {
		m, err := r.Match(tc.rcpt)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Match(%q) = %+v, %v; want %v", tc.rcpt, m, err, tc.err)
			}
			continue
		}
		if err != nil || m.Room != tc.room || m.Subaddress != tc.sub {
			t.Errorf("Match(%q) = room %q sub %q, %v; want room %q sub %q", tc.rcpt, m.Room, m.Subaddress, err, tc.room, tc.sub)
		}
	}
}

func TestRouterCatchAllOnlyWhenConfigured(t *testing.T) {
	r, err := NewRouter(
		Route{Address: "cases@agency.example", Room: "!cases:hs.example"},
		Route{Address: "{user}@agency.example", Room: "!inbox:hs.example"},
	)
	if err != nil {
		t.Fatal(err)
	}
	for rcpt, room := range map[string]string{
		"cases@agency.example":  "!cases:hs.example", // routes are tried in order
		"anyone@agency.example": "!inbox:hs.example",
	} {
		if m, err := r.Match(rcpt); err != nil || m.Room != room {
			t.Errorf("Match(%q) = %q, %v; want %q", rcpt, m.Room, err, room)
		}
	}
	if _, err := r.Match("anyone@other.example"); !errors.Is(err, ErrUnknownRecipient) {
		t.Errorf("catch-all reached another domain: %v", err)
	}
}

func TestRouterAllowSenders(t *testing.T) {
	r, err := NewRouter(Route{Address: "registry@agency.example", Room: "!r:hs.example", AllowSenders: []string{"System@Agency.example", "@partner.example"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Match("registry@agency.example")
	if err != nil {
		t.Fatal(err)
	}
	for sender, want := range map[string]bool{
		"system@agency.example":      true,
		"SYSTEM@agency.example":      true,
		"anyone@partner.example":     true,
		"other@agency.example":       false,
		"anyone@sub.partner.example": false,
		"x@partner.example.evil":     false,
		"":                           false, // a bounce does not pass an allow-list
	} {
		if got := m.Allows(sender); got != want {
			t.Errorf("Allows(%q) = %v, want %v", sender, got, want)
		}
	}
	if pm, err := r.Match("postmaster@agency.example"); err != nil || !pm.Allows("stranger@elsewhere.example") || !pm.Allows("") {
		t.Errorf("postmaster@ through a route with an allow-list refused a sender: %v", err)
	}
	open, _ := NewRouter(Route{Address: "a@b.example", Room: "!r:hs.example"})
	if m, _ := open.Match("a@b.example"); !m.Allows("") || !m.Allows("x@y.example") {
		t.Error("a route without an allow-list refused a sender")
	}
}

func TestNewRouterRefusesBadRoutes(t *testing.T) {
	for name, rt := range map[string]Route{
		"no domain":             {Address: "cases", Room: "!r:hs.example"},
		"capture in domain":     {Address: "a@{d}.example", Room: "!r:hs.example"},
		"two captures":          {Address: "{a}-{b}@x.example", Room: "#{a}:hs.example"},
		"unclosed capture":      {Address: "case-{id@x.example", Room: "!r:hs.example"},
		"plus in address":       {Address: "a+b@x.example", Room: "!r:hs.example"},
		"room not id or alias":  {Address: "a@x.example", Room: "cases"},
		"capture in room ID":    {Address: "c-{id}@x.example", Room: "!{id}:hs.example"},
		"room uses no capture":  {Address: "a@x.example", Room: "#case-{id}:hs.example"},
		"create needs an alias": {Address: "a@x.example", Room: "!r:hs.example", Create: &matrix.RoomSpec{}},
		"bad allowed sender":    {Address: "a@x.example", Room: "!r:hs.example", AllowSenders: []string{"nobody"}},
		"only pattern routes":   {Address: "c-{id}@x.example", Room: "#c-{id}:hs.example"},
	} {
		if _, err := NewRouter(rt); !errors.Is(err, ErrInvalidRoute) {
			t.Errorf("%s: NewRouter = %v, want ErrInvalidRoute", name, err)
		}
	}
}

func TestNewNeedsClientAndRouter(t *testing.T) {
	r, _ := NewRouter(Route{Address: "a@b.example", Room: "!r:hs.example"})
	for name, opts := range map[string]Options{"no client": {Router: r}, "neither": {}} {
		if _, err := New(t.Context(), opts); !errors.Is(err, ErrMissingOption) {
			t.Errorf("%s: New = %v, want ErrMissingOption", name, err)
		}
	}
}

func TestMatchSpecFillsCapture(t *testing.T) {
	tmpl := &matrix.RoomSpec{Preset: matrix.CaseRoom, Name: "Case {id}", Topic: "Mail for case {id}", Invite: []id.UserID{"@officer:hs.example"},
		PowerLevels: map[id.UserID]matrix.PowerLevel{"@lead:hs.example": matrix.PowerModerator}, Space: "!space:hs.example"}
	r, err := NewRouter(
		Route{Address: "case-{id}@cases.example.se", Room: "#case-{id}:hs.example", Create: tmpl},
		Route{Address: "postmaster@cases.example.se", Room: "!ops:hs.example"},
	)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Match("Case-4711+x@cases.example.se")
	if err != nil {
		t.Fatal(err)
	}
	spec := m.Spec()
	if m.Capture != "4711" || spec.Name != "Case 4711" || spec.Topic != "Mail for case 4711" || spec.CaseID != "4711" ||
		spec.Space != "!space:hs.example" || len(spec.Invite) != 1 || spec.PowerLevels["@lead:hs.example"] != matrix.PowerModerator {
		t.Errorf("capture %q, spec %+v", m.Capture, spec)
	}
	if tmpl.Name != "Case {id}" || tmpl.CaseID != "" {
		t.Errorf("the route's template was changed: %+v", tmpl)
	}
	if pm, _ := r.Match("postmaster@cases.example.se"); pm.Spec() != nil {
		t.Error("a route without a template has a spec")
	}
}
