package matrix

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	nethtml "golang.org/x/net/html"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// hostileHTML seeds the sanitizer fuzzers with the usual attacks.
var hostileHTML = []string{
	"",
	"plain text & more",
	`<script>alert(1)</script>`,
	`<SCRIPT SRC=//evil.example/x.js></SCRIPT>`,
	`<scr<script>ipt>alert(1)</scr</script>ipt>`,
	`<img src=x onerror=alert(1)>`,
	`<img src="mxc://example.se/abc" alt="ok" width="10">`,
	`<a href="javascript:alert(1)">x</a>`,
	`<a href="jav&#x09;ascript:alert(1)">x</a>`,
	`<a href=" &#14;  javascript:alert(1)">x</a>`,
	`<a href="https://example.se" onclick="x()">x</a>`,
	`<svg><style><img src=x onerror=alert(1)></style></svg>`,
	`<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>`,
	`<noscript><p title="</noscript><img src=x onerror=alert(1)>">`,
	`<iframe srcdoc="<script>alert(1)</script>"></iframe>`,
	`<style>@import 'https://evil.example/x.css';</style>`,
	`<div style="background:url(javascript:alert(1))">x</div>`,
	"<b>\x00<i>nul</b>",
	`<b><i><u>unclosed`,
	`</p></div></b>stray`,
	`<!--><script>alert(1)</script>-->`,
	`<![CDATA[<script>alert(1)</script>]]>`,
	`<p>a<p>b<li>c<li>d<table><tr><td>1<td>2<tr><td>3</table>`,
	`<font color="red" data-mx-color="#ff0000">c</font><span data-mx-spoiler>s</span>`,
	`<ol start="-1"><li>x</ol><code class="language-go">y</code>`,
	strings.Repeat("<div>", 150) + "deep",
	"\xff\xfe<b>\xc3</b>",
	"&#XD", // a carriage return, which must survive a second pass unchanged
}

// eventHandler matches on* attribute names. specHTMLProblem already
// refuses attributes outside the spec's list; this check stays meaningful
// should that list grow.
var eventHandler = regexp.MustCompile(`^on[a-z]+$`)

func assertSafeHTML(t *testing.T, in, out string) {
	t.Helper()
	if utf8.ValidString(in) && !utf8.ValidString(out) {
		t.Fatalf("valid UTF-8 in, invalid out: %q -> %q", in, out)
	}
	if strings.Contains(strings.ToLower(out), "<script") {
		t.Fatalf("<script in output: %q -> %q", in, out)
	}
	if problem := specHTMLProblem(out); problem != "" {
		t.Fatalf("%s: %q -> %q", problem, in, out)
	}
	z := nethtml.NewTokenizer(strings.NewReader(out))
	for tt := z.Next(); tt != nethtml.ErrorToken; tt = z.Next() {
		for _, a := range z.Token().Attr {
			squeezed := strings.Join(strings.Fields(strings.ToLower(a.Val)), "")
			if eventHandler.MatchString(a.Key) || strings.Contains(squeezed, "javascript:") {
				t.Fatalf("attribute %s=%q: %q -> %q", a.Key, a.Val, in, out)
			}
		}
	}
}

func FuzzSanitizeHTML(f *testing.F) {
	for _, s := range hostileHTML {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := SanitizeHTML(in)
		assertSafeHTML(t, in, out)
		if again := SanitizeHTML(out); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
	})
}

func FuzzMarkdown(f *testing.F) {
	for _, s := range []string{
		"", "hello", "**bold** _it_ ~~s~~ `code` ||spoiler||",
		"# h\n\n- a\n- b\n\n1. x\n\n> quote\n\n```go\nx\n```",
		"|a|b|\n|-|-|\n|1|2|",
		"[x](javascript:alert(1)) ![i](https://e.se/i.png) <script>alert(1)</script>",
		"hi @anna:example.se, @bo:[::1]:8448. `@c:d.e` [@f:g.h](https://x.y)",
		"[a]: https://e.se/\n\n[a][a][a]",
		strings.Repeat("> ", 200) + "deep",
		strings.Repeat("* ", 200) + "deep",
		"a\x00b\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, md string) {
		m := Markdown(md)
		c := m.Content.(*event.MessageEventContent)
		if c.Body != md {
			t.Fatalf("body %q, want the Markdown %q", c.Body, md)
		}
		if bound := maxMarkdownGrowth*len(md) + 1024; len(c.FormattedBody) > bound {
			t.Fatalf("%d bytes of HTML from %d of Markdown, bound %d", len(c.FormattedBody), len(md), bound)
		}
		assertSafeHTML(t, md, c.FormattedBody)
		for _, u := range c.Mentions.UserIDs {
			if _, _, err := u.ParseAndValidateRelaxed(); err != nil {
				t.Fatalf("mentions invalid user ID %q: %v", u, err)
			}
		}
		if strings.TrimSpace(md) != "" && utf8.ValidString(md) {
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		}
	})
}

func FuzzFit(f *testing.F) {
	f.Add("short", false, uint8(0), false, uint16(0))
	f.Add(strings.Repeat("å€🙂", 500), false, uint8(3), false, uint16(100))
	f.Add(strings.Repeat("<b>x</b>&", 300), true, uint8(0), true, uint16(0))
	f.Add(strings.Repeat("\x01\"\\", 1000), false, uint8(200), true, uint16(4000))
	f.Add("\xff\xfe", true, uint8(50), false, uint16(0))
	f.Fuzz(func(t *testing.T, body string, isHTML bool, mentions uint8, edit bool, extra uint16) {
		// Small limits make small inputs exercise the cutting.
		limit := minFitLimit + int(extra)%(4*1024)
		m := Text(body)
		if isHTML {
			m = HTML(body)
		}
		var users []id.UserID
		for i := range int(mentions) {
			users = append(users, id.UserID(fmt.Sprintf("@user%03d:example.se", i)))
		}
		m = m.Mentioning(users...)
		if edit {
			m = Edit("$orig", m)
		}

		fitted, overflow, mime, fits := FitWithin(m, limit)
		size, err := ContentSize(fitted)
		if err != nil {
			t.Fatalf("ContentSize(fitted): %v", err)
		}
		if size > limit {
			t.Fatalf("fitted content is %d bytes, limit %d", size, limit)
		}
		if fits != (overflow == nil) || fits != (mime == "") {
			t.Fatalf("fits %v but overflow of %d bytes (%q)", fits, len(overflow), mime)
		}
		if c, ok := fitted.Content.(*event.MessageEventContent); ok && utf8.ValidString(body) && !utf8.ValidString(c.Body) {
			t.Fatalf("fitted body is not valid UTF-8: %q", c.Body)
		}
	})
}
