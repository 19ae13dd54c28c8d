-- The cookies a client sent with a download, sealed by the API (AES-256-GCM under
-- CLIPSTASH_SECRET_KEY, the job id as associated data; crates/sources/src/cookies.rs):
-- format version, nonce, ciphertext and tag. Never plain text, never returned by the API.
ALTER TABLE jobs ADD COLUMN cookies_sealed bytea;

-- Cookies are needed only until the job ends: whichever transition ends it (succeed, fail,
-- cancel, from any code path), the sealed value goes in the same UPDATE.
CREATE FUNCTION jobs_forget_cookies() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.cookies_sealed := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_forget_cookies
    BEFORE UPDATE ON jobs
    FOR EACH ROW
    WHEN (NEW.cookies_sealed IS NOT NULL AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION jobs_forget_cookies();
