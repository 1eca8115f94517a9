-- v0 -> v1: samtal e2ee tables
-- Who was in a room (joined or invited) when this device started an outbound room key there:
-- a key request from another user's device is answered only for keys started while that user
-- was in the room, so that nobody gets, by asking, a key from before they joined or after they
-- were removed.
CREATE TABLE samtal_e2ee_session_member (
	account_id TEXT NOT NULL,
	session_id TEXT NOT NULL,
	user_id    TEXT NOT NULL,
	PRIMARY KEY (account_id, session_id, user_id)
);
-- Before an encrypted send, the devices holding the room's current key are looked up by
-- session in mautrix's table, whose key starts with the user.
CREATE INDEX IF NOT EXISTS samtal_megolm_shared_by_session ON crypto_megolm_outbound_session_shared (session_id);
