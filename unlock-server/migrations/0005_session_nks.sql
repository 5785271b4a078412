-- The NKs (SHA-256 of each public key, 32 bytes each, concatenated) a boot session released
-- to: a new challenge from the same agent process (same NK, same boot) is answered with the
-- same half again, re-sealed, without counting a release.
ALTER TABLE sessions ADD COLUMN nks BLOB;
