package identity

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the plan for people: a summary line, then one line per action.
func (p *Plan) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "run %s from %s: %d managed rooms, %d members, %d leaving (%.1f%%)\n",
		p.RunID, p.Source, p.Rooms, p.Members, len(p.Leavers), p.Percent)
	if p.OverLimit {
		fmt.Fprintf(tw, "REFUSED: %s\n", p.LimitReason)
	}
	for _, m := range p.Missing {
		fmt.Fprintf(tw, "MISSING: %s\n", strings.TrimPrefix(m.Error(), "identity: "))
	}
	if p.Empty() {
		fmt.Fprintln(tw, "nothing to do")
		return tw.Flush()
	}
	fmt.Fprintln(tw, "ACTION\tUSER\tROOM\tREASON")
	for _, a := range p.Actions {
		room := string(a.Room)
		if room == "" {
			room = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Kind, a.User, room, a.Reason)
	}
	return tw.Flush()
}

// WriteJSON prints the plan as indented JSON.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}
