package matrix

import (
	"regexp"
	"strings"

	"github.com/microcosm-cc/bluemonday"
	nethtml "golang.org/x/net/html"
)

// MaxHTMLDepth is how deeply SanitizeHTML lets elements nest. The spec
// recommends that clients cap nesting at 100 levels; a client that recurses
// over a deeper tree may crash, so deeper markup is never sent.
const MaxHTMLDepth = 100

// SanitizeHTML reduces html to the subset the Matrix spec allows in
// formatted_body, so that hostile markup (from mail, from case systems,
// from users) cannot reach a client that renders it.
//
// Only the spec's elements and attributes survive: links only to http,
// https, ftp, mailto and magnet; images only from mxc:// URIs (an image
// from anywhere else would leak who read the message, so it is replaced by
// its alt text); colours only as #rrggbb. Script and style elements are
// removed with their content; other disallowed elements are removed but
// their text is kept. The result is balanced: every element is closed.
//
// Elements nested deeper than MaxHTMLDepth are flattened rather than
// refused: their tags are dropped and their text is kept in place, so a
// hostile message still arrives readable.
//
// NUL bytes are removed and invalid UTF-8 is replaced with U+FFFD, so the
// result is always valid UTF-8.
func SanitizeHTML(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	return balance(matrixPolicy.Sanitize(s))
}

// matrixPolicy is the spec's allowed subset of HTML, from
// https://spec.matrix.org/v1.16/client-server-api/#mroommessage-msgtypes.
// It is built once; a bluemonday policy is safe for concurrent use.
var matrixPolicy = newMatrixPolicy()

var (
	hexColor      = regexp.MustCompile(`^#[0-9A-Fa-f]{6}$`)
	fontColor     = regexp.MustCompile(`^(?:#[0-9A-Fa-f]{6}|[A-Za-z]{1,20})$`)
	linkHref      = regexp.MustCompile(`^\s*(?i:https?|ftp|mailto|magnet):`)
	mxcSource     = regexp.MustCompile(`^mxc://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9_-]+$`)
	pixels        = regexp.MustCompile(`^[0-9]{1,5}$`)
	listStart     = regexp.MustCompile(`^[0-9]{1,9}$`)
	codeLanguage  = regexp.MustCompile(`^language-[A-Za-z0-9_+#.-]{1,32}$`)
	onlyBlankText = regexp.MustCompile(`^_blank$`)
)

func newMatrixPolicy() *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	p.AllowElements("font", "del", "h1", "h2", "h3", "h4", "h5", "h6",
		"blockquote", "p", "a", "ul", "ol", "sup", "sub", "li", "b", "i", "u",
		"strong", "em", "s", "code", "hr", "br", "div", "table", "thead",
		"tbody", "tr", "th", "td", "caption", "pre", "span", "img",
		"details", "summary")

	p.AllowAttrs("data-mx-bg-color", "data-mx-color").Matching(hexColor).OnElements("font", "span")
	p.AllowAttrs("color").Matching(fontColor).OnElements("font")
	p.AllowAttrs("data-mx-spoiler").OnElements("span")

	// The scheme is checked twice: by the pattern on the raw attribute and
	// by bluemonday on the parsed URL. mxc must be a known scheme for
	// images, and the pattern keeps it out of links.
	p.RequireParseableURLs(true)
	p.AllowRelativeURLs(false)
	p.AllowURLSchemes("http", "https", "ftp", "mailto", "magnet", "mxc")
	p.AllowAttrs("href").Matching(linkHref).OnElements("a")
	p.AllowAttrs("target").Matching(onlyBlankText).OnElements("a")

	p.AllowAttrs("src").Matching(mxcSource).OnElements("img")
	p.AllowAttrs("width", "height").Matching(pixels).OnElements("img")
	p.AllowAttrs("alt", "title").OnElements("img")

	p.AllowAttrs("start").Matching(listStart).OnElements("ol")
	p.AllowAttrs("class").Matching(codeLanguage).OnElements("code")
	return p
}

// voidElements are the allowed elements that never have content or an end
// tag.
var voidElements = map[string]bool{"br": true, "hr": true, "img": true}

// implicitlyClosed says which open elements a start tag closes while they
// are innermost, as browsers do for "<li>a<li>b" and "<p>a<div>b". Without
// it a balanced rewrite would nest the second item in the first.
var implicitlyClosed = closingRules()

func closingRules() map[string]map[string]bool {
	rules := map[string]map[string]bool{
		"li": {"li": true},
		"tr": {"td": true, "th": true, "tr": true},
		"td": {"td": true, "th": true},
		"th": {"td": true, "th": true},
	}
	// Block elements end an open paragraph.
	for _, block := range []string{"p", "div", "ul", "ol", "table", "blockquote",
		"pre", "h1", "h2", "h3", "h4", "h5", "h6", "details"} {
		rules[block] = map[string]bool{"p": true}
	}
	return rules
}

// openElement is one element on balance's stack. Elements that were
// dropped (too deep, or a link without a target) stay on the stack so
// that their end tags are dropped too.
type openElement struct {
	name    string
	emitted bool
}

// balance rewrites sanitized HTML so that every element is closed, no end
// tag is left without its start, and nesting stops at MaxHTMLDepth. It also
// drops what the policy leaves meaningless: links whose href was removed
// and images whose src was removed (replaced by their alt text).
//
// It works on tokens rather than a parsed tree, so it runs in linear time
// and constant stack depth however deep the input nests.
func balance(s string) string {
	var (
		out     strings.Builder
		stack   []openElement
		open    = map[string]int{} // how many of each name are on the stack
		emitted int                // how many on the stack were written out
	)
	out.Grow(len(s))

	closeTop := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		open[top.name]--
		if top.emitted {
			emitted--
			out.WriteString("</" + top.name + ">")
		}
	}

	z := nethtml.NewTokenizer(strings.NewReader(s))
	for {
		tt := z.Next()
		if tt == nethtml.ErrorToken {
			break // io.EOF: the tokenizer reads a string, nothing else can fail
		}
		tok := z.Token()
		switch tt {
		case nethtml.TextToken:
			textEscaper.WriteString(&out, tok.Data)

		case nethtml.StartTagToken, nethtml.SelfClosingTagToken:
			if voidElements[tok.Data] {
				writeVoid(&out, tok)
				continue
			}
			for closes := implicitlyClosed[tok.Data]; len(stack) > 0 && closes[stack[len(stack)-1].name]; {
				closeTop()
			}
			keep := emitted < MaxHTMLDepth && !(tok.Data == "a" && !hasAttr(tok, "href"))
			if tt == nethtml.SelfClosingTagToken {
				// "<div/>" is an empty element to the eye of anyone writing it.
				if keep {
					tok.Type = nethtml.StartTagToken
					out.WriteString(tok.String() + "</" + tok.Data + ">")
				}
				continue
			}
			stack = append(stack, openElement{name: tok.Data, emitted: keep})
			open[tok.Data]++
			if keep {
				emitted++
				out.WriteString(tok.String())
			}

		case nethtml.EndTagToken:
			if open[tok.Data] == 0 {
				continue // a stray end tag
			}
			for stack[len(stack)-1].name != tok.Data {
				closeTop()
			}
			closeTop()
		}
	}
	for len(stack) > 0 {
		closeTop()
	}
	return out.String()
}

// writeVoid writes a void element, or for an image whose src the policy
// removed, its alt text: a reader should still learn what was there.
func writeVoid(out *strings.Builder, tok nethtml.Token) {
	if tok.Data == "img" && !hasAttr(tok, "src") {
		for _, a := range tok.Attr {
			if a.Key == "alt" {
				textEscaper.WriteString(out, a.Val)
			}
		}
		return
	}
	tok.Type = nethtml.StartTagToken
	out.WriteString(tok.String())
}

// textEscaper escapes text between tags. Quotes need no escaping there,
// and leaving them keeps mail text compact and readable. A bare carriage
// return would be read back as a newline, so it stays a reference.
var textEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\r", "&#13;")

func hasAttr(tok nethtml.Token, key string) bool {
	for _, a := range tok.Attr {
		if a.Key == key {
			return true
		}
	}
	return false
}
