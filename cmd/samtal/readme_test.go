package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/internal/snippet"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestReadmeShell runs the samtal command lines of README.md's shell snippets, in order, as
// the account of a fresh homeserver (agency.example becomes its name).
func TestReadmeShell(t *testing.T) {
	blocks, err := snippet.Markdown(filepath.Join("..", "..", "README.md"), "sh")
	if err != nil {
		t.Fatal(err)
	}
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "casebot")
	var ran int
	var outputs []string
	for _, b := range blocks {
		for line := range strings.Lines(b) {
			words := shellWords(line)
			if len(words) == 0 || words[0] != "samtal" {
				continue // go run, scripts/test.sh: not samtal's own commands
			}
			for i, w := range words {
				words[i] = strings.ReplaceAll(w, "agency.example", srv.ServerName)
			}
			out := mustSamtal(t, words[1:]...)
			if words[1] == "tail" { // and not, say, the recovery key bootstrap prints
				outputs = append(outputs, out)
			}
			ran++
		}
	}
	if ran < 4 {
		t.Fatalf("ran %d command lines of README.md, want at least 4", ran)
	}
	if all := strings.Join(outputs, "\n"); !strings.Contains(all, `"body":"**Decision made**: approved"`) || !strings.Contains(all, `"encrypted":true`) {
		t.Errorf("tail in README.md did not print the encrypted message sent before it:\n%s", all)
	}
}

// shellWords splits a line as sh would for the README's lines: words separated by spaces,
// single quotes, and a comment from an unquoted # at the start of a word.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range strings.TrimSpace(line) {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
