-- v0 -> v1: offboarding state: SCIM users and seen logout token IDs
-- The users an agency's IdP provisioned through SCIM (identity.SCIM with SCIMOptions.DB).
CREATE TABLE samtal_identity_scim_user (
	id          TEXT    PRIMARY KEY,         -- the SCIM resource ID we issued
	user_name   TEXT    NOT NULL UNIQUE,
	external_id TEXT    NOT NULL DEFAULT '',
	active      BOOLEAN NOT NULL,
	emails      TEXT    NOT NULL DEFAULT '', -- JSON array of {value, primary}
	matrix_id   TEXT    NOT NULL
);

-- The IDs (jti) of back-channel logout tokens already accepted, until the token would be
-- refused anyway (identity.BackChannelLogout with BackChannelOptions.DB).
CREATE TABLE samtal_identity_logout_jti (
	issuer     TEXT   NOT NULL,
	jti        TEXT   NOT NULL,
	expires_at BIGINT NOT NULL, -- Unix milliseconds
	PRIMARY KEY (issuer, jti)
);
CREATE INDEX samtal_identity_logout_jti_expires ON samtal_identity_logout_jti (expires_at);
