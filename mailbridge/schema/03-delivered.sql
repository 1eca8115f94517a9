-- v3 -> v4: a delivery is done once the outbox has sent it; IMAP mail is flagged or moved then
-- The posts of one mail into one room (the message, its attachments, the original .eml) as
-- items of the matrix outbox. A delivery in state 3 (posted) waits for all of them to be sent;
-- one that fails for good sends the delivery back to state 0, to be posted again.
CREATE TABLE samtal_mail_delivery_item (
	spool_id  BIGINT NOT NULL,
	target    TEXT   NOT NULL,
	outbox_id BIGINT NOT NULL,
	PRIMARY KEY (spool_id, target, outbox_id)
);
CREATE INDEX samtal_mail_delivery_item_outbox ON samtal_mail_delivery_item (outbox_id);

-- IMAP mail spooled from a mailbox with a flag or a move to do once it is delivered into every
-- room it goes to. Written with the mail and the checkpoint; deleted once flagged or moved.
CREATE TABLE samtal_mail_imap_after (
	account      TEXT   NOT NULL,
	mailbox      TEXT   NOT NULL,
	uid_validity BIGINT NOT NULL,
	uid          BIGINT NOT NULL,
	spool_id     BIGINT NOT NULL,
	PRIMARY KEY (account, mailbox, uid_validity, uid)
);
