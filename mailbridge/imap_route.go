package mailbridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// recipientFields are the header fields a mail from a mailbox without an Address is routed
// by, in this order: where the delivering server wrote the envelope recipient, then the
// addresses the sender wrote.
var recipientFields = []string{"Delivered-To", "X-Original-To", "To", "Cc"}

// route returns the sender of a mail taken from mb, and the rooms it goes to: the route of
// mb.Address, or of each recipient in its header the Router accepts; once per room. The
// sender is the Return-Path the delivering server wrote, else the From address, and is what
// a route's allow-list is checked against (it is no more authenticated than MAIL FROM).
func (p *Poller) route(mb *IMAPMailbox, raw []byte) (from string, targets []target) {
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
	for _, rcpt := range recipients {
		m, err := p.g.router.Match(rcpt)
		if err != nil || !m.Allows(from) {
			continue
		}
		if t, ok := targetFor(m, rcpt); ok && !hasRoom(targets, t.room) {
			targets = append(targets, t)
		}
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

func hasRoom(targets []target, room string) bool {
	for _, t := range targets {
		if t.room == room {
			return true
		}
	}
	return false
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
