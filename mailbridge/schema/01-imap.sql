-- v1 -> v2: IMAP poller checkpoints
-- Where the IMAP poller of one mailbox has got to: every message with a UID up to last_uid
-- under uid_validity is in the spool (or was skipped on purpose). Written in the transaction
-- that spools the message.
CREATE TABLE samtal_mail_imap_checkpoint (
	account      TEXT   NOT NULL, -- user@host:port of the IMAP login
	mailbox      TEXT   NOT NULL, -- mailbox name, such as INBOX
	uid_validity BIGINT NOT NULL,
	last_uid     BIGINT NOT NULL,
	updated_at   BIGINT NOT NULL, -- Unix milliseconds
	PRIMARY KEY (account, mailbox)
);
