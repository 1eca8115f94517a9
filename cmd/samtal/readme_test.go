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
	var lines []string
	for _, b := range blocks {
		lines = append(lines, strings.Split(b, "\n")...)
	}
	outputs, ran := runShellLines(t, srv, lines)
	if ran < 4 {
		t.Fatalf("ran %d command lines of README.md, want at least 4", ran)
	}
	if all := strings.Join(outputs, "\n"); !strings.Contains(all, `"body":"**Decision made**: approved"`) || !strings.Contains(all, `"encrypted":true`) {
		t.Errorf("tail in README.md did not print the encrypted message sent before it:\n%s", all)
	}
}

// TestDocShell runs the shell lines of the command's package documentation the same way.
func TestDocShell(t *testing.T) {
	blocks, err := snippet.PackageDoc("main.go")
	if err != nil {
		t.Fatal(err)
	}
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "casebot") // the environment the doc's export and read lines set up
	var ran int
	for _, b := range blocks {
		if strings.Contains(b, "export SAMTAL_") { // the example, not the list of commands
			_, n := runShellLines(t, srv, strings.Split(b, "\n"))
			ran += n
		}
	}
	if ran < 3 {
		t.Fatalf("ran %d command lines of the package documentation, want at least 3", ran)
	}
}

// runShellLines runs the samtal command lines among lines (and unset), with agency.example
// replaced by srv's name, failing the test if one fails. It returns what tail printed and how
// many lines it ran. Other lines (go run, export, read) are left to the test's environment.
func runShellLines(t *testing.T, srv *matrixtest.Server, lines []string) (tailOutputs []string, ran int) {
	t.Helper()
	for _, line := range lines {
		words := shellWords(line)
		switch {
		case len(words) == 2 && words[0] == "unset":
			t.Setenv(words[1], "")
			continue
		case len(words) < 2 || words[0] != "samtal":
			continue
		}
		for i, w := range words {
			words[i] = strings.ReplaceAll(w, "agency.example", srv.ServerName)
		}
		out := mustSamtal(t, words[1:]...)
		if words[1] == "tail" { // and not, say, the recovery key bootstrap prints
			tailOutputs = append(tailOutputs, out)
		}
		ran++
	}
	return tailOutputs, ran
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
