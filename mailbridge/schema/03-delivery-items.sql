-- v3 -> v4: the outbox items of each delivery, so that it is done only once they are sent
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
