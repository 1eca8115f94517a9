// Package snippet finds the code shown in documentation, so that tests can check that every
// snippet of README.md and of the package docs is code that is compiled and run.
package snippet

import (
	"go/parser"
	"go/token"
	"os"
	"strings"
)

// Markdown returns the fenced code blocks of the markdown file at path whose info string is
// lang ("go", "sh"), without their fences.
func Markdown(path, lang string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var blocks []string
	var cur *strings.Builder
	for line := range strings.Lines(string(b)) {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && trimmed == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line)
		}
	}
	return blocks, nil
}

// PackageDoc returns the code blocks (the indented paragraphs) of the package doc comment in
// the Go file at path, with the indentation removed.
func PackageDoc(path string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		return nil, err
	}
	if f.Doc == nil {
		return nil, nil
	}
	var blocks []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimRight(cur.String(), "\n"); s != "" {
			blocks = append(blocks, s+"\n")
		}
		cur.Reset()
	}
	for line := range strings.Lines(f.Doc.Text()) {
		switch {
		case strings.HasPrefix(line, "\t"):
			cur.WriteString(strings.TrimPrefix(line, "\t"))
		case strings.TrimSpace(line) == "" && cur.Len() > 0:
			cur.WriteString("\n") // a blank line inside a block
		default:
			flush()
		}
	}
	flush()
	return blocks, nil
}

// In reports whether snippet appears in the Go source file at path, line by line, ignoring
// the indentation of both and blank lines, so that a snippet may be the body of a function.
func In(path, snippet string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	return strings.Contains("\n"+normalize(string(b)), "\n"+normalize(snippet)), nil
}

func normalize(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
