-- v0 -> v1: OAuth 2.0 sessions of the identity package
CREATE TABLE samtal_identity_oauth (
	name           TEXT    PRIMARY KEY, -- the matrix session name
	client_id      TEXT    NOT NULL,
	token_endpoint TEXT    NOT NULL,
	revocation     TEXT    NOT NULL DEFAULT '',
	access_token   TEXT    NOT NULL,
	login_token    TEXT    NOT NULL DEFAULT '', -- the access token of the login, which the matrix session keeps
	refresh_token  TEXT    NOT NULL,
	expires_at     BIGINT  NOT NULL DEFAULT 0, -- unix ms; 0 when the token does not expire
	generation     BIGINT  NOT NULL DEFAULT 0, -- incremented by each rotation
	lease_holder   TEXT    NOT NULL DEFAULT '', -- the process refreshing now
	lease_until    BIGINT  NOT NULL DEFAULT 0  -- unix ms
);
