-- v2 -> v3: mail threads: which event each mail became in each room, and what it refers to
-- One row per mail (by Message-ID) posted into a room. root_message_id is the Message-ID of
-- the mail whose event starts the thread in that room (the row's own for a thread root).
-- event_id is filled in once the outbox has sent the post (outbox_id).
CREATE TABLE samtal_mail_thread (
	room_id         TEXT   NOT NULL,
	message_id      TEXT   NOT NULL,
	root_message_id TEXT   NOT NULL,
	spool_id        BIGINT NOT NULL,
	outbox_id       BIGINT NOT NULL DEFAULT 0,
	event_id        TEXT   NOT NULL DEFAULT '',
	created_at      BIGINT NOT NULL,
	PRIMARY KEY (room_id, message_id)
);

-- The Message-IDs a mail names in In-Reply-To and References, so that a mail arriving before
-- the one it answers (or a sibling) is found by the mail that arrives later.
CREATE TABLE samtal_mail_reference (
	room_id    TEXT NOT NULL,
	message_id TEXT NOT NULL, -- the mail that refers
	ref        TEXT NOT NULL, -- the Message-ID it refers to
	PRIMARY KEY (room_id, message_id, ref)
);
CREATE INDEX samtal_mail_reference_ref ON samtal_mail_reference (room_id, ref);

-- Media uploaded for a mail's inline images (cid:), so that a retried delivery, or the same
-- mail spooled again, refers to the same uploads and so makes the same content.
CREATE TABLE samtal_mail_media (
	mail_key TEXT NOT NULL, -- the post's idempotency key (Message-ID or content, and room)
	part     TEXT NOT NULL, -- the attachment's index and Content-ID
	mxc      TEXT NOT NULL,
	PRIMARY KEY (mail_key, part)
);
