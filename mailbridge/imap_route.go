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

// route returns the sender of a mail taken from mb, and the rooms it goes to: the route of
// mb.Address, or of each recipient in its header the Router accepts; once per room. The
// sender is the Return-Path the delivering server wrote, else the From address: the spool's
// envelope sender, which proves nothing. A route with AllowSenders takes the mail only from
// a sender it proves (imap_sender.go); for a route that refuses it, the room's delivery is
// spooled dead with the reason.
func (p *Poller) route(ctx context.Context, mb *IMAPMailbox, raw []byte) (from string, targets []target) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err == nil {
		from = headerAddress(h.Get("Return-Path"))
		if from == "" {
			from = headerAddress(h.Get("From"))
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
	var senders *provenSenders // worked out once, for the first route with an allow-list
	for _, rcpt := range recipients {
		m, err := p.g.router.Match(rcpt)
		if err != nil {
			continue
		}
		t, ok := targetFor(m, rcpt)
		if !ok {
			continue
		}
		if !m.Allows("") {
			if senders == nil {
				ps := p.imapProven(ctx, raw, message.Header{Header: h})
				senders = &ps
			}
			t.refused = imapRefusal(m, *senders)
		}
		// As over SMTP, the strictest route of a room holds: one that refuses refuses the room.
		if i := roomIndex(targets, t.room); i >= 0 {
			if targets[i].refused == "" {
				targets[i].refused = t.refused
			}
			continue
		}
		targets = append(targets, t)
	}
	return from, targets
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
