package mailbridge

import (
	"errors"

	"github.com/emersion/go-smtp"
)

// The gateway's refusals, each an *smtp.SMTPError with the exact reply code the SMTP client
// sees, so a caller can compare them with errors.Is and the server can answer with them as
// they are. Router.Match and the Gateway wrap them with %w.
var (
	// ErrUnknownRecipient: no route accepts the address (550 5.1.1).
	ErrUnknownRecipient = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such recipient here"}
	// ErrSenderNotAllowed: the route's sender allow-list names none of the senders the mail
	// proves (Route.AllowSenders), answered at DATA (550 5.7.1).
	ErrSenderNotAllowed = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender not allowed for this recipient"}
	// ErrTooManyRecipients: more recipients in one mail than Options.MaxRecipients (452 4.5.3).
	ErrTooManyRecipients = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	// ErrMessageTooLarge: the mail is larger than Options.MaxMessageBytes (552 5.3.4).
	ErrMessageTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message too large"}
	// ErrLineTooLong: a line of the mail is longer than Options.MaxLineLength (500 5.5.2). The
	// connection cannot be used after it.
	ErrLineTooLong = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	// ErrHeaderTooLarge: the header is over 256 KiB or has more than Options.MaxHeaderFields
	// fields (552 5.3.4).
	ErrHeaderTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message header too large"}
	// ErrMalformed: the mail's header cannot be read (550 5.6.0).
	ErrMalformed = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed message header"}
	// ErrSpoolUnavailable: the mail could not be stored durably, so it was not accepted; the
	// sender should try again later (451 4.3.0).
	ErrSpoolUnavailable = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later"}
	// errNoTransaction: DATA or RCPT arrived out of order (503 5.5.1). go-smtp catches most of
	// these itself.
	errNoTransaction = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Bad sequence of commands"}
)

// ErrClosed is returned by Serve and ListenAndServe after Close, and by New's Gateway methods
// once it is closed.
var ErrClosed = errors.New("mailbridge: gateway closed")

// ErrInvalidRoute is wrapped by NewRouter's errors: a route that cannot work as written.
var ErrInvalidRoute = errors.New("mailbridge: invalid route")

// reply turns err into the *smtp.SMTPError the client is answered with: the one err wraps, or
// 451 4.3.0 for anything else, since a plain error from a Session would become a permanent 554
// and make the sender give up on mail we might accept a moment later.
func reply(err error) *smtp.SMTPError {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return ErrSpoolUnavailable
}
