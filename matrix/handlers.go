package matrix

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"maunium.net/go/mautrix/event"
)

// Event is an event handed to a handler: the Matrix event with RoomID set and its content
// parsed where mautrix knows the type (Content.AsMessage, AsMember, AsReaction...), and the
// Client that received it, to answer with.
type Event struct {
	*event.Event
	Client *Client

	invite  bool         // this account's invite, from a room's stripped invite state
	replies atomic.Int32 // Reply calls so far: they number the replies' idempotency keys
}

// Text returns the body of a message event, and "" for any other event.
func (e *Event) Text() string {
	if e.Event == nil || e.Type.Type != event.EventMessage.Type {
		return ""
	}
	if msg, ok := e.Content.Parsed.(*event.MessageEventContent); ok {
		return msg.Body
	}
	body, _ := e.Content.Raw["body"].(string)
	return body
}

// Reply sends msg into the event's room as a reply to it (see Reply), through the outbox.
//
// Each reply to an event carries an idempotency key made of the event ID and the reply's
// number (a hash of the event ID and 1 for the first): when a batch is delivered again after a crash, a
// handler that answers the same way does not answer twice.
func (e *Event) Reply(ctx context.Context, msg Message) (*Pending, error) {
	if e.Client == nil || e.Event == nil {
		return nil, errors.New("matrix: Event.Reply: the event has no Client")
	}
	n := e.replies.Add(1)
	var opts SendOptions
	if e.ID != "" {
		// Hashed: event IDs may be up to 255 bytes, as long as a whole key may be.
		sum := sha256.Sum256([]byte(e.ID))
		opts.IdempotencyKey = fmt.Sprintf("reply/%x/%d", sum[:16], n)
	}
	return e.Client.Send(ctx, e.RoomID, Reply(e.Event, msg), opts)
}

// handler is a registered handler and the events it is for.
type handler struct {
	kind  string // for logs
	match func(*Event) bool
	fn    func(ctx context.Context, evt *Event) error
}

// OnMessage registers fn for m.room.message events. (Once end-to-end encryption is enabled,
// m.room.encrypted events will be decrypted and handed here too.)
func (s *Syncer) OnMessage(fn func(ctx context.Context, evt *Event) error) {
	s.add("message", func(e *Event) bool { return !e.invite && e.Type.Type == event.EventMessage.Type }, fn)
}

// OnInvite registers fn for invites of this account to a room. The event is the m.room.member
// invite from the room's invite state; its Sender is the inviter. An AutoJoin policy has
// accepted the invite, or not, before fn runs. Servers may send invites without an event ID.
func (s *Syncer) OnInvite(fn func(ctx context.Context, evt *Event) error) {
	s.add("invite", func(e *Event) bool { return e.invite }, fn)
}

// OnMembership registers fn for m.room.member events in rooms this account is in: others
// joining, leaving, being invited, kicked or banned, and this account being removed.
func (s *Syncer) OnMembership(fn func(ctx context.Context, evt *Event) error) {
	s.add("membership", func(e *Event) bool { return !e.invite && e.Type.Type == event.StateMember.Type && e.StateKey != nil }, fn)
}

// OnReaction registers fn for m.reaction events (Content.AsReaction().RelatesTo has the
// target event and the key).
func (s *Syncer) OnReaction(fn func(ctx context.Context, evt *Event) error) {
	s.add("reaction", func(e *Event) bool { return e.Type.Type == event.EventReaction.Type }, fn)
}

// OnEvent registers fn for events of type t, matched by name whatever t's class, or for every
// event the Syncer delivers (invites included) when t is the zero event.Type.
func (s *Syncer) OnEvent(t event.Type, fn func(ctx context.Context, evt *Event) error) {
	s.add("event "+t.Type, func(e *Event) bool { return t.Type == "" || e.Type.Type == t.Type }, fn)
}

func (s *Syncer) add(kind string, match func(*Event) bool, fn func(ctx context.Context, evt *Event) error) {
	if fn == nil {
		panic("matrix: Syncer.On" + kind + ": nil handler")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers = append(s.handlers, handler{kind: kind, match: match, fn: fn})
}

// dispatch hands evt to every matching handler in order, after the auto-join policy has seen
// an invite. Failures are logged and counted, never returned: see Syncer.
func (s *Syncer) dispatch(ctx context.Context, evt *Event) {
	s.mu.Lock()
	hs := s.handlers
	s.mu.Unlock()
	s.events.Add(1)
	log := s.c.log.With("room", evt.RoomID, "event", evt.ID, "type", evt.Type.Type, "sender", evt.Sender)
	if evt.invite && s.opts.AutoJoin.Allows(evt.Sender) {
		_, err := s.c.mx.JoinRoomByID(ctx, evt.RoomID)
		if err == nil {
			s.c.forgetEncryption(evt.RoomID)
		}
		if err != nil && ctx.Err() == nil {
			s.handlerErrors.Add(1)
			log.Error("sync: cannot accept invite", "err", wrapErr(err))
		} else if err == nil {
			log.Info("sync: accepted invite")
		}
	}
	for _, h := range hs {
		if !h.match(evt) {
			continue
		}
		err := call(ctx, h.fn, evt)
		if err == nil || ctx.Err() != nil {
			continue // a handler cut short by the end of Run: the batch will come again
		}
		s.handlerErrors.Add(1)
		var p panicError
		if errors.As(err, &p) {
			log.Error("sync: handler panicked", "handler", h.kind, "panic", p.value, "stack", p.stack)
		} else {
			log.Error("sync: handler failed", "handler", h.kind, "err", err)
		}
	}
}

// panicError is a handler's panic, recovered.
type panicError struct {
	value any
	stack string
}

func (p panicError) Error() string { return fmt.Sprintf("handler panicked: %v", p.value) }

func call(ctx context.Context, fn func(context.Context, *Event) error, evt *Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{value: r, stack: string(debug.Stack())}
		}
	}()
	return fn(ctx, evt)
}
