-- v4 -> v5: the delivery queue read per room, not as a whole
-- The delivery worker claims a room's next deliveries in the order of this index (due first,
-- then oldest mail), reads which rooms have pending mail with one probe per room (claim.go),
-- and counts a room's posts unsent from it: each of them costs a batch or a room, never the
-- whole backlog. It takes the place of the index on (state, next_attempt), which a claim read
-- in full, a row and its mail for every pending delivery, to take 32 of them.
CREATE INDEX samtal_mail_delivery_queue ON samtal_mail_delivery (state, target, next_attempt, spool_id);
DROP INDEX samtal_mail_delivery_due;
