-- v0 -> v1: claims on mail deliveries, so that several gateways can share one spool
-- Who works on a pending delivery now, and until when; an expired claim is free to take.
ALTER TABLE samtal_mail_delivery ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE samtal_mail_delivery ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
