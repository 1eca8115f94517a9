// Package mailbridge will be the email gateway: mail arriving over SMTP or fetched over IMAP is
// posted into rooms, and replies in those rooms go back out as email.
//
// Nothing is implemented yet.
package mailbridge
