-- v1 -> v2: outbox stores first and decides in the lane; typed failures; retention; leases
-- kind: '' a message; 'file' an attachment of SendFile; 'overflow' the full text of an
-- oversized message; 'overflow-enc' the same, needed only when the room turns out encrypted
-- (the message fits a plaintext event but not an encrypted one).
ALTER TABLE samtal_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT '';
-- content as it goes into an encrypted room when that differs (shortened to the smaller limit)
ALTER TABLE samtal_outbox ADD COLUMN content_enc TEXT NOT NULL DEFAULT '';
-- the bytes of a file to upload, until the item is delivered
-- only: postgres
ALTER TABLE samtal_outbox ADD COLUMN data BYTEA;
-- only: sqlite (line commented)
--ALTER TABLE samtal_outbox ADD COLUMN data BLOB;
-- the file message after its upload, and how it was uploaded: 1 plaintext, 2 encrypted
ALTER TABLE samtal_outbox ADD COLUMN upload TEXT NOT NULL DEFAULT '';
ALTER TABLE samtal_outbox ADD COLUMN upload_mode INTEGER NOT NULL DEFAULT 0;
-- what an idempotency key is bound to: a hash of the event type and content as given to Send
ALTER TABLE samtal_outbox ADD COLUMN content_hash TEXT NOT NULL DEFAULT '';
-- the account that stored the item: only the same user sends it, also after a new login
ALTER TABLE samtal_outbox ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
-- 1 when the client that stored the item had encryption: it then waits for UseEncryption
ALTER TABLE samtal_outbox ADD COLUMN encrypting INTEGER NOT NULL DEFAULT 0;
-- 1 when it went into an encrypted room (its content is dropped at once after delivery)
ALTER TABLE samtal_outbox ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
-- a failure, typed: kind (http, unreachable, invalid_content, ...), status, errcode,
-- retry-after in ms; error keeps the message
ALTER TABLE samtal_outbox ADD COLUMN err_kind TEXT NOT NULL DEFAULT '';
ALTER TABLE samtal_outbox ADD COLUMN err_status INTEGER NOT NULL DEFAULT 0;
ALTER TABLE samtal_outbox ADD COLUMN err_code TEXT NOT NULL DEFAULT '';
ALTER TABLE samtal_outbox ADD COLUMN err_retry_after BIGINT NOT NULL DEFAULT 0;
ALTER TABLE samtal_outbox ADD COLUMN err_request TEXT NOT NULL DEFAULT '';

-- A room's lane is worked by one process at a time: the holder renews its lease while it
-- sends; a dead holder's lease runs out and another process takes the room over.
CREATE TABLE samtal_outbox_lease (
	session    TEXT   NOT NULL,
	room_id    TEXT   NOT NULL,
	holder     TEXT   NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (session, room_id)
);
