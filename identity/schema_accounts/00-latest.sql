-- v0 -> v1: the claim mapping's table: which person (issuer and sub) holds which localpart
-- Both columns are unique: the database, not the process, keeps two people off one Matrix ID,
-- also when several instances sign people in at once.
CREATE TABLE samtal_identity_accounts (
	subject    TEXT   PRIMARY KEY,
	localpart  TEXT   NOT NULL UNIQUE,
	claimed_at BIGINT NOT NULL -- unix ms
);
