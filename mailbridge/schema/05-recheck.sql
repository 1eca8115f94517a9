-- v5 -> v6: a dead letter that DNS deferred is checked again when it is retried
-- For a delivery of a mail taken from IMAP that was dead-lettered because DNS did not answer
-- (its sender could not be authenticated), "imap:" and the mailbox server's trusted authserv-id
-- (IMAPOptions.TrustAuthServID): when it is retried, the route's sender checks run again
-- before it is posted (recheck.go). '' for every other delivery: a retry posts it as it is.
ALTER TABLE samtal_mail_delivery ADD COLUMN recheck TEXT NOT NULL DEFAULT '';

-- The retention sweep asks, for each old mail, whether an IMAP flag or move is still to do.
CREATE INDEX samtal_mail_imap_after_spool ON samtal_mail_imap_after (spool_id);
