package mailbridge

import (
	"fmt"
	"html"
	"strings"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
)

// Message returns the mail as a Matrix message: a compact header (sender, subject and the
// sender check), the text, calendar invitations, the names of its attachments (which the
// Gateway posts as files right after it), and notes on what could not be shown. Mail with
// HTML becomes formatted_body (sanitized, remote images dropped, quoted history folded) with
// the plaintext body beside it. Inline images are named where they were; the Gateway shows
// them in place where it can. A message over the event size limit is shortened by the Gateway,
// which attaches the original mail.
func (m *Mail) Message() matrix.Message {
	return m.render(nil)
}

// formatAddress is "Name <address>", or whichever of the two there is.
func formatAddress(name, addr string) string {
	switch {
	case name != "" && addr != "":
		return name + " <" + addr + ">"
	case addr != "":
		return addr
	}
	return name
}

// senderCheck says in words what the gateway's DMARC check found. Only a pass is called
// verified; a signature inside the mail (PGP, S/MIME) never is.
func senderCheck(m *Mail) string {
	if m.Auth != nil && m.Auth.Submitter != "" {
		return "sent by an authenticated submitter of this gateway"
	}
	dmarc := m.DMARC
	if m.Auth != nil && m.Auth.Overridden {
		return "DMARC " + dmarc + ", accepted by this gateway's policy (the sender is not verified)"
	}
	switch dmarc {
	case "pass":
		return "DMARC pass (the sender's domain is verified)"
	case "fail":
		return "DMARC fail (the sender may be forged)"
	case "":
		return "not checked (the sender is not verified)"
	}
	return "DMARC " + dmarc + " (the sender is not verified)"
}

// render builds the message; uploaded maps the index of an inline image to the mxc URI it
// was uploaded to, for rooms that are not encrypted.
func (m *Mail) render(uploaded map[int]string) matrix.Message {
	from := formatAddress(m.FromName, m.FromAddress)
	if from == "" {
		from = "(unknown sender)"
	}
	subject := m.Subject
	if subject == "" {
		subject = "(no subject)"
	}
	text := m.Text
	if text == "" {
		text = "(this mail has no text)"
	}
	check := senderCheck(m)
	var notes []string
	for _, c := range m.Calendar {
		notes = append(notes, "Calendar: "+c)
	}
	var names, tooLarge []string
	for i, a := range m.Attachments {
		if _, shown := uploaded[i]; shown {
			continue
		}
		n := a.Name
		if n == "" {
			n = "unnamed " + a.MimeType
		}
		if a.tooLarge {
			tooLarge = append(tooLarge, fmt.Sprintf("%s (%d bytes)", n, a.Size))
			continue
		}
		names = append(names, fmt.Sprintf("%s (%d bytes)", n, a.Size))
	}
	if len(names) > 0 {
		notes = append(notes, "Attachments: "+strings.Join(names, ", "))
	}
	if len(tooLarge) > 0 {
		notes = append(notes, "Not attached, larger than the homeserver accepts (kept in the gateway's spool): "+strings.Join(tooLarge, ", "))
	}
	if m.Automated != "" {
		notes = append(notes, "Note: sent automatically ("+m.Automated+")")
	}
	for _, n := range m.Notes {
		notes = append(notes, "Note: "+n)
	}
	for _, p := range m.Problems {
		notes = append(notes, "Note: "+p)
	}
	plain := "From: " + from + "\nSubject: " + subject + "\nSender check: " + check + "\n\n" + text
	if len(notes) > 0 {
		plain += "\n\n" + strings.Join(notes, "\n")
	}
	if m.HTML == "" {
		return matrix.Text(plain)
	}
	var b strings.Builder
	b.WriteString("<p><b>From:</b> " + html.EscapeString(from) + "<br><b>Subject:</b> " + html.EscapeString(subject) +
		"<br><b>Sender check:</b> " + html.EscapeString(check) + "</p>")
	b.WriteString(placeInlineImages(m.HTML, m.Attachments, uploaded))
	for _, n := range notes {
		b.WriteString("<p><i>" + html.EscapeString(n) + "</i></p>")
	}
	msg := matrix.HTML(b.String())
	if c, ok := msg.Content.(*event.MessageEventContent); ok {
		c.Body = plain
	}
	return msg
}
