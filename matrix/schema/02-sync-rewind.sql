-- v2 -> v3: the sync position keeps its rewind point, so that a restarted Syncer asks again
-- prev_batch is the token the last committed batch was requested with ('' for none); prev_seen
-- the delivery keys of the events handed out since it, as a JSON array ('' for none).
ALTER TABLE samtal_sync ADD COLUMN prev_batch TEXT NOT NULL DEFAULT '';
ALTER TABLE samtal_sync ADD COLUMN prev_seen TEXT NOT NULL DEFAULT '';
