package matrix

import (
	"strings"
	"testing"
	"unicode/utf8"

	nethtml "golang.org/x/net/html"
)

// specAttrs is the spec's allowed HTML: each element with the attributes it
// may carry.
var specAttrs = map[string][]string{
	"font": {"data-mx-bg-color", "data-mx-color", "color"},
	"span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler"},
	"a":    {"href", "target"},
	"img":  {"width", "height", "alt", "title", "src"},
	"ol":   {"start"},
	"code": {"class"},
	"del":  nil, "h1": nil, "h2": nil, "h3": nil, "h4": nil, "h5": nil, "h6": nil,
	"blockquote": nil, "p": nil, "ul": nil, "sup": nil, "sub": nil, "li": nil,
	"b": nil, "i": nil, "u": nil, "strong": nil, "em": nil, "s": nil, "hr": nil,
	"br": nil, "div": nil, "table": nil, "thead": nil, "tbody": nil, "tr": nil,
	"th": nil, "td": nil, "caption": nil, "pre": nil, "details": nil, "summary": nil,
}

// assertSpecHTML fails unless s uses only the spec's elements and
// attributes, every link and image is safe, every element is closed and
// nesting stays within MaxHTMLDepth.
func assertSpecHTML(t *testing.T, s string) {
	t.Helper()
	if problem := specHTMLProblem(s); problem != "" {
		t.Errorf("%s in %q", problem, s)
	}
}

func specHTMLProblem(s string) string {
	var stack []string
	z := nethtml.NewTokenizer(strings.NewReader(s))
	for {
		tt := z.Next()
		if tt == nethtml.ErrorToken {
			break
		}
		tok := z.Token()
		switch tt {
		case nethtml.StartTagToken, nethtml.SelfClosingTagToken:
			allowed, ok := specAttrs[tok.Data]
			if !ok {
				return "element <" + tok.Data + "> not allowed"
			}
			for _, a := range tok.Attr {
				if !contains(allowed, a.Key) {
					return "attribute " + a.Key + " on <" + tok.Data + "> not allowed"
				}
				v := strings.ToLower(strings.TrimSpace(a.Val))
				switch {
				case a.Key == "href" && !hasAnyPrefix(v, "http:", "https:", "ftp:", "mailto:", "magnet:"):
					return "link to " + a.Val
				case a.Key == "src" && !strings.HasPrefix(v, "mxc://"):
					return "image from " + a.Val
				}
			}
			if tt == nethtml.StartTagToken && !voidElements[tok.Data] {
				stack = append(stack, tok.Data)
				if len(stack) > MaxHTMLDepth {
					return "nesting deeper than MaxHTMLDepth"
				}
			}
		case nethtml.EndTagToken:
			if len(stack) == 0 || stack[len(stack)-1] != tok.Data {
				return "unbalanced </" + tok.Data + ">"
			}
			stack = stack[:len(stack)-1]
		case nethtml.CommentToken, nethtml.DoctypeToken:
			return "comment or doctype"
		}
	}
	if len(stack) > 0 {
		return "unclosed <" + stack[len(stack)-1] + ">"
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func TestSanitizeHTMLRemovesHostileMarkup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		absent  []string // case-insensitive
		present []string
	}{
		{"script", `a<script>alert(1)</script>b`, []string{"script", "alert"}, []string{"ab"}},
		{"unclosed script", `a<script>alert(1)`, []string{"script", "alert"}, []string{"a"}},
		{"script in attribute-less svg", `<svg><script>alert(1)</script></svg>x`, []string{"script", "svg", "alert"}, []string{"x"}},
		{"style", `<style>body{display:none}</style>x`, []string{"style", "display"}, []string{"x"}},
		{"style attribute", `<p style="position:fixed">x</p>`, []string{"style", "fixed"}, []string{"<p>x</p>"}},
		{"iframe", `<iframe src="https://evil.example"></iframe>x`, []string{"iframe", "evil"}, []string{"x"}},
		{"event handler", `<b onclick="alert(1)" onmouseover=alert(2)>x</b>`, []string{"onclick", "onmouseover", "alert"}, []string{"<b>x</b>"}},
		{"javascript link", `<a href="javascript:alert(1)">x</a>`, []string{"javascript", "href"}, []string{"x"}},
		{"obfuscated javascript link", `<a href="&#x6A;avascript&colon;alert(1)">x</a>`, []string{"javascript", "href", "&#x6A"}, []string{"x"}},
		{"javascript link with whitespace", "<a href=\" \tjava\nscript:alert(1)\">x</a>", []string{"script", "href"}, []string{"x"}},
		{"data link", `<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>`, []string{"data:", "href"}, []string{"x"}},
		{"relative link", `<a href="/admin">x</a>`, []string{"href"}, []string{"x"}},
		{"matrix scheme link", `<a href="matrix:u/anna:example.se">x</a>`, []string{"href"}, []string{"x"}},
		{"mxc link", `<a href="mxc://example.se/abc">x</a>`, []string{"href"}, []string{"x"}},
		{"web image becomes its alt text", `<img src="https://tracker.example/p.gif" alt="Logo">`, []string{"img", "tracker"}, []string{"Logo"}},
		{"protocol-relative image", `<img src="//tracker.example/p.gif">`, []string{"img", "tracker"}, nil},
		{"data image", `<img src="data:image/png;base64,AAAA" alt="x">`, []string{"img", "data:"}, nil},
		{"image with handler", `<img src="mxc://example.se/abc" onerror="alert(1)">`, []string{"onerror", "alert"}, []string{`<img src="mxc://example.se/abc">`}},
		{"form controls", `<form action="https://evil.example"><input name=p><button>Go</button></form>`, []string{"form", "input", "button", "evil"}, []string{"Go"}},
		{"object and embed", `<object data="x.swf"></object><embed src="x.swf">y`, []string{"object", "embed", "swf"}, []string{"y"}},
		{"meta refresh", `<meta http-equiv="refresh" content="0;url=https://evil.example">x`, []string{"meta", "evil"}, []string{"x"}},
		{"base and link", `<base href="https://evil.example/"><link rel=stylesheet href=x.css>x`, []string{"base", "link", "evil"}, []string{"x"}},
		{"comment", `a<!-- <script>alert(1)</script> -->b`, []string{"<!--", "script"}, []string{"ab"}},
		{"NUL bytes", "<scr\x00ipt>alert(1)</script>a\x00b", []string{"\x00", "<scr"}, []string{"ab"}},
		{"unclosed tags", `<b><i>x`, nil, []string{"<b><i>x</i></b>"}},
		{"stray end tags", `</div></b>x</i>`, []string{"</"}, []string{"x"}},
		{"misnested tags", `<b><i>x</b>y</i>`, nil, []string{"<b><i>x</i></b>y"}},
		{"unterminated tag", `x<b onclick="alert(1)`, []string{"onclick", "alert"}, []string{"x"}},
		{"bad colour", `<font color="red;background:url(x)" data-mx-color="#ff0000">x</font>`, []string{"url", "background"}, []string{`data-mx-color="#ff0000"`}},
		{"class outside code", `<p class="mx_EventTile">x</p><code class="language-go; x">y</code>`, []string{"class"}, []string{"<p>x</p><code>y</code>"}},
		{"target other than _blank", `<a href="https://example.se" target="_top">x</a>`, []string{"_top"}, []string{`<a href="https://example.se">x</a>`}},
		{"table with scope", `<table><tr><th scope="col">h</th></tr></table>`, []string{"scope"}, []string{"<th>h</th>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SanitizeHTML(tt.in)
			lower := strings.ToLower(got)
			for _, s := range tt.absent {
				if strings.Contains(lower, strings.ToLower(s)) {
					t.Errorf("SanitizeHTML(%q) = %q, contains %q", tt.in, got, s)
				}
			}
			for _, s := range tt.present {
				if !strings.Contains(got, s) {
					t.Errorf("SanitizeHTML(%q) = %q, want %q in it", tt.in, got, s)
				}
			}
			assertSpecHTML(t, got)
		})
	}
}

func TestSanitizeHTMLKeepsTheSpecSubset(t *testing.T) {
	tests := []string{
		`<p>Hello <b>bold</b> <i>it</i> <u>u</u> <s>s</s> <del>d</del> <em>e</em> <strong>st</strong> x<sup>2</sup> x<sub>2</sub></p>`,
		`<h1>1</h1><h2>2</h2><h3>3</h3><h4>4</h4><h5>5</h5><h6>6</h6><hr><br>`,
		`<blockquote><p>quoted</p></blockquote><div>div</div>`,
		`<ul><li>a</li></ul><ol start="3"><li>c</li></ol>`,
		`<pre><code class="language-go">x := 1</code></pre>`,
		`<table><caption>c</caption><thead><tr><th>h</th></tr></thead><tbody><tr><td>d</td></tr></tbody></table>`,
		`<a href="https://example.se/a?b=c&amp;d=e" target="_blank">https</a> <a href="http://example.se">http</a> <a href="ftp://example.se/f">ftp</a> <a href="mailto:anna@example.se">mail</a> <a href="magnet:?xt=urn:btih:abc">magnet</a>`,
		`<a href="https://matrix.to/#/@anna:example.se">Anna</a>`,
		`<font color="#00ff00" data-mx-color="#ff0000" data-mx-bg-color="#000000">c</font><span data-mx-spoiler="why">s</span><span data-mx-color="#ffffff">w</span>`,
		`<img src="mxc://example.se/AbC_12-3" alt="emoji" title="t" width="32" height="32">`,
		`<details><summary>more</summary>hidden</details>`,
	}
	for _, in := range tests {
		if got := SanitizeHTML(in); got != in {
			t.Errorf("SanitizeHTML changed allowed HTML:\n  in %q\n got %q", in, got)
		}
	}
}

func TestSanitizeHTMLFlattensDeepNesting(t *testing.T) {
	const depth = 3 * MaxHTMLDepth
	in := strings.Repeat("<div>", depth) + "deep" + strings.Repeat("</div>", depth) + "after"
	got := SanitizeHTML(in)
	assertSpecHTML(t, got)
	if n := strings.Count(got, "<div>"); n != MaxHTMLDepth {
		t.Errorf("kept %d nested divs, want %d", n, MaxHTMLDepth)
	}
	if !strings.Contains(got, "deep") || !strings.HasSuffix(got, "</div>after") {
		t.Errorf("text lost or misplaced: ...%s", got[max(0, len(got)-40):])
	}

	// Siblings below the cap stay elements: only depth is capped.
	in = strings.Repeat("<b>", MaxHTMLDepth-1) + "<i>1</i><i>2</i>" + strings.Repeat("</b>", MaxHTMLDepth-1)
	if got := SanitizeHTML(in); !strings.Contains(got, "<i>1</i><i>2</i>") {
		t.Errorf("siblings at the deepest level lost")
	}
}

func TestSanitizeHTMLDeepUnclosedInputIsFast(t *testing.T) {
	// A quarter million unclosed tags and as many stray end tags: work
	// must stay linear, or one mail could stall a gateway.
	in := strings.Repeat("<b>", 1<<18) + strings.Repeat("</i>", 1<<18) + "x"
	got := SanitizeHTML(in)
	assertSpecHTML(t, got)
}

func TestSanitizeHTMLMakesValidUTF8(t *testing.T) {
	got := SanitizeHTML("<b>a\xffb</b>\xc3")
	if !utf8.ValidString(got) {
		t.Errorf("SanitizeHTML returned invalid UTF-8: %q", got)
	}
	if got != "<b>a\uFFFDb</b>\uFFFD" {
		t.Errorf("got %q", got)
	}
}

func TestSanitizeHTMLIsIdempotent(t *testing.T) {
	for _, in := range []string{
		`<p>a<p>b`, `<li>x<li>y`, `it's "quoted" & <fine>`, `<img alt="a&b" src="mxc://e.se/x">`,
		`<table><tr><td>1<td>2<tr><td>3</table>`, `<div/>x<b/>`,
	} {
		once := SanitizeHTML(in)
		if twice := SanitizeHTML(once); twice != once {
			t.Errorf("SanitizeHTML(%q):\n once %q\ntwice %q", in, once, twice)
		}
	}
}
