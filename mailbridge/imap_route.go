package mailbridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/mail"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// recipientFields are the header fields a mail from a mailbox without an Address is routed
// by, in this order: where the delivering server wrote the envelope recipient, then the
// addresses the sender wrote.
var recipientFields = []string{"Delivered-To", "X-Original-To", "To", "Cc"}

// imapRouted is what the poller spools of one mail: its envelope sender, the mail with the
// gateway's Authentication-Results on top, and the rooms it goes to.
type imapRouted struct {
	from    string
	raw     []byte
	targets []target
	dmarc   string // the DMARC result, for Options.Metrics; "" when the mail went to no route
}

// route works out where a mail taken from mb goes: the route of mb.Address, or of each
// recipient in its header the Router accepts; once per room. The sender is the Return-Path the
// delivering server wrote, else the From address: the spool's envelope sender, which proves
// nothing. Each route's policy is applied as over SMTP (imap_policy.go); a room whose route
// refuses the mail gets its delivery spooled dead with the reason. Of a room's routes the
// strictest holds.
func (p *Poller) route(ctx context.Context, mb *IMAPMailbox, raw []byte) imapRouted {
	out := imapRouted{raw: raw}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err == nil {
		out.from = headerAddress(h.Get("Return-Path"))
		if out.from == "" {
			out.from = headerAddress(h.Get("From"))
		}
	}
	var recipients []string
	if mb.Address != "" {
		recipients = []string{mb.Address}
	} else if err == nil {
		for _, f := range recipientFields {
			for _, v := range h.Values(f) {
				list, err := mail.ParseAddressList(v)
				if err != nil {
					continue
				}
				for _, a := range list {
					recipients = append(recipients, a.Address)
				}
			}
		}
	}
	var matches []Match
	for _, rcpt := range recipients {
		if m, err := p.g.router.Match(rcpt); err == nil {
			matches = append(matches, m)
		}
	}
	if len(matches) == 0 {
		return out
	}
	header := message.Header{Header: h}
	env, v := p.g.imapVerdict(ctx, p.opts.TrustAuthServID, out.from, raw, header)
	ps := proven(envelope{}, v, header)
	for _, m := range matches {
		t, ok := targetFor(m, m.Recipient)
		if !ok {
			continue
		}
		t.refused = p.g.imapPolicy(m, v, ps)
		if deferredByDNS(t.refused) {
			t.recheck = recheckIMAP + p.opts.TrustAuthServID
		}
		// As over SMTP, the strictest route of a room holds: one that refuses refuses the room.
		if i := roomIndex(out.targets, t.room); i >= 0 {
			if out.targets[i].refused == "" && t.refused != "" {
				// The refusing route's recipient names the delivery, so that a retry checks
				// the mail again by that route (recheck.go).
				out.targets[i].refused, out.targets[i].recheck, out.targets[i].recipient = t.refused, t.recheck, t.recipient
			}
			continue
		}
		out.targets = append(out.targets, t)
	}
	var taking []Match // the routes of the rooms that take the mail, for SenderAccept
	for _, m := range matches {
		if i := roomIndex(out.targets, m.Room); i >= 0 && out.targets[i].refused == "" {
			taking = append(taking, m)
		}
	}
	v.overridden = overriddenFor(taking, v.dmarc)
	out.raw = p.g.stamp(raw, env, v)
	out.dmarc = v.results().DMARC
	return out
}

// targetFor is the spool target of a matched recipient.
func targetFor(m Match, rcpt string) (target, bool) {
	t := target{room: m.Room, recipient: rcpt}
	if m.Route.Create != nil {
		spec, err := json.Marshal(m.Route.Create)
		if err != nil {
			return target{}, false
		}
		t.createSpec = string(spec)
	}
	return t, true
}

// roomIndex is the index of room's target in targets, or -1.
func roomIndex(targets []target, room string) int {
	for i, t := range targets {
		if t.room == room {
			return i
		}
	}
	return -1
}

// headerAddress is the address in a Return-Path or From field, or "".
func headerAddress(v string) string {
	v = strings.TrimSpace(v)
	if v == "" || v == "<>" {
		return ""
	}
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	return ""
}
