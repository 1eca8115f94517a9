package mailbridge

import (
	"io"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"golang.org/x/text/encoding/charmap"
)

// Text from a mail as it comes: charsets that are wrong or missing, parameters that break the
// rules, names and text that must be made safe to show.

// bestGuess decodes text that is not valid UTF-8: as UTF-8 with the bad bytes replaced when
// it has valid multibyte sequences (UTF-8 with damage), else as Windows-1252 (a legacy charset
// not named), which maps every byte to a character. It reports which it chose.
func bestGuess(s string) (string, bool) {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError && size > 1 {
			return strings.ToValidUTF8(s, "\uFFFD"), true
		}
		i += size
	}
	return windows1252(s), false
}

// windows1252 decodes s as Windows-1252, which maps every byte to a character.
func windows1252(s string) string {
	out, err := charmap.Windows1252.NewDecoder().String(s)
	if err != nil {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	return out
}

// lenientMediaType reads a Content-Type or Content-Disposition that mime.ParseMediaType
// refuses (duplicate or malformed parameters): the value before the first ';' and the
// parameters that can be read.
func lenientMediaType(v string) (string, map[string]string) {
	head, rest, _ := strings.Cut(v, ";")
	params := map[string]string{}
	for _, kv := range strings.Split(rest, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.Trim(strings.TrimSpace(val), `"`)
		if _, seen := params[k]; !seen && k != "" {
			params[k] = val
		}
	}
	return strings.ToLower(strings.TrimSpace(head)), params
}

// fileName returns the file name parameter param of header field, decoded: RFC 2047 words
// (which go-message has decoded in params already) and RFC 2231 extended values in any
// charset (Go's mime package reads only UTF-8 and US-ASCII ones).
func fileName(h message.Header, field, param string, params map[string]string) string {
	if v := params[param]; v != "" {
		return v
	}
	raw := h.Get(field)
	if !strings.Contains(raw, param+"*") {
		return ""
	}
	// Collect name*=, name*0=, name*0*=, name*1*= ... in order.
	_, all := lenientMediaType(raw)
	segs, ext := map[int]string{}, map[int]bool{}
	for k, v := range all {
		rest, ok := strings.CutPrefix(k, param+"*")
		if !ok {
			continue
		}
		if rest == "" {
			segs[0], ext[0] = v, true
			continue
		}
		extended := strings.HasSuffix(rest, "*")
		n, err := strconv.Atoi(strings.TrimSuffix(rest, "*"))
		if err != nil || n < 0 || n >= 100 {
			continue
		}
		segs[n], ext[n] = v, extended
	}
	var b strings.Builder
	cs := ""
	for i := 0; ; i++ {
		v, ok := segs[i]
		if !ok {
			break
		}
		if ext[i] {
			if i == 0 {
				if parts := strings.SplitN(v, "'", 3); len(parts) == 3 {
					cs, v = parts[0], parts[2]
				}
			}
			if dec, err := url.PathUnescape(v); err == nil {
				v = dec
			}
		}
		b.WriteString(v)
	}
	s := b.String()
	if cs != "" && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
		if r, err := charset.Reader(cs, strings.NewReader(s)); err == nil {
			if out, err := io.ReadAll(r); err == nil {
				s = string(out)
			}
		}
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		s = dec
	}
	if !utf8.ValidString(s) {
		s = windows1252(s)
	}
	return s
}

// clean makes text from a mail safe to show: valid UTF-8, line ends as \n, no NUL or other
// control characters (newlines and tabs kept where multiline), and no bidi overrides, which
// could make a subject or name read differently from what it is.
func clean(s string, multiline bool) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.Map(func(r rune) rune {
		switch {
		case multiline && (r == '\n' || r == '\t'):
			return r
		case !multiline && (r == '\n' || r == '\t'):
			return ' '
		case unicode.IsControl(r), isBidiControl(r):
			return -1
		}
		return r
	}, s)
}

func isBidiControl(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F || r == 0x061C
}

// SafeFileName returns name as a file name that is safe to show and to save: the last path
// element only, no control or bidi characters, at most 255 bytes. It returns "" for a name
// with nothing left.
func SafeFileName(name string) string {
	name = clean(name, false)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(strings.Trim(name, ". "))
	for len(name) > 255 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}
