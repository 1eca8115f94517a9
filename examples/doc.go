// Package examples holds small runnable programs, one per user story, each in its own
// directory. None exist yet.
package examples
