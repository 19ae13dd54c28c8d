//! Webhook signing, the Standard Webhooks way (<https://www.standardwebhooks.com>): each
//! delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`; a
//! secret is shown to its owner as `whsec_<base64 of the secret bytes>`.
//!
//! Each API key has one secret. It is stored either as its bytes, or (when the server has
//! `CLIPSTASH_SECRET_KEY`) only as a random salt it is derived from with
//! [`WebhookSecret::derive`], so a database dump alone does not give it away.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// What a secret's text form starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of a derivation salt.
pub const SALT_LEN: usize = 16;
/// Separates derived webhook secrets from anything else keyed by `CLIPSTASH_SECRET_KEY`.
const DERIVE_CONTEXT: &[u8] = b"clipstash webhook signing secret v1";

/// A webhook signing secret: ours are [`SECRET_LEN`] bytes; [`WebhookSecret::parse`] takes
/// the 24-64 bytes the spec allows. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// How a key's secret is stored (the two `api_keys` columns).
#[derive(Debug, Clone, Copy)]
pub enum StoredSecret<'a> {
    /// The secret's bytes.
    Plain(&'a [u8]),
    /// The salt it is derived from with `CLIPSTASH_SECRET_KEY`.
    Derived { key_id: Uuid, salt: &'a [u8] },
}

/// Why a key's secret cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretUnavailable {
    #[error(
        "the key's webhook secret is derived from CLIPSTASH_SECRET_KEY, which this process does not have"
    )]
    NoServerKey,
    #[error("the stored webhook secret has the wrong length")]
    Malformed,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

impl WebhookSecret {
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes.to_vec())
    }

    /// The secret of key `key_id` issued with `salt`, under the server key `server_key`
    /// (`CLIPSTASH_SECRET_KEY`): HMAC-SHA256(server_key, context || key id || salt).
    pub fn derive(server_key: &[u8], key_id: Uuid, salt: &[u8]) -> Self {
        let mut mac = hmac(server_key);
        mac.update(DERIVE_CONTEXT);
        mac.update(key_id.as_bytes());
        mac.update(salt);
        Self(mac.finalize().into_bytes().to_vec())
    }

    /// The secret a key's row stands for; `server_key` is `CLIPSTASH_SECRET_KEY` if set.
    pub fn resolve(
        stored: StoredSecret<'_>,
        server_key: Option<&[u8]>,
    ) -> Result<Self, SecretUnavailable> {
        match stored {
            StoredSecret::Plain(bytes) if bytes.len() == SECRET_LEN => Ok(Self(bytes.to_vec())),
            StoredSecret::Plain(_) => Err(SecretUnavailable::Malformed),
            StoredSecret::Derived { key_id, salt } => {
                if salt.len() != SALT_LEN {
                    return Err(SecretUnavailable::Malformed);
                }
                let server_key = server_key.ok_or(SecretUnavailable::NoServerKey)?;
                Ok(Self::derive(server_key, key_id, salt))
            }
        }
    }

    /// `whsec_<base64>`: what `keys create` shows and receivers verify with.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.0))
    }

    /// Parses `whsec_<base64>` (or bare base64) of 24 to 64 bytes back into a secret.
    pub fn parse(s: &str) -> Option<Self> {
        let b64 = s.trim().strip_prefix(SECRET_PREFIX).unwrap_or(s.trim());
        let bytes = B64.decode(b64).ok()?;
        (24..=64).contains(&bytes.len()).then_some(Self(bytes))
    }

    /// The `webhook-signature` value for message `msg_id` sent at `timestamp` with `body`:
    /// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = hmac(&self.0);
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-id` of outbox row `id`: the same for every retry of one delivery.
pub fn message_id(id: Uuid) -> String {
    format!("msg_{}", id.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signs_like_the_reference_libraries() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn whsec_round_trips_and_never_prints() {
        let s = WebhookSecret::from_bytes([7; SECRET_LEN]);
        let text = s.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(&text), Some(s.clone()));
        assert!(!format!("{s:?}").contains(&text[6..]));
        assert_eq!(WebhookSecret::parse("whsec_c2hvcnQ="), None);
    }

    #[test]
    fn derived_secrets_depend_on_server_key_key_and_salt() {
        let id = Uuid::now_v7();
        let salt = [1u8; SALT_LEN];
        let a = WebhookSecret::derive(b"server key one, 32 bytes or more", id, &salt);
        assert_eq!(
            a,
            WebhookSecret::derive(b"server key one, 32 bytes or more", id, &salt)
        );
        assert_ne!(
            a,
            WebhookSecret::derive(b"server key two, 32 bytes or more", id, &salt)
        );
        assert_ne!(
            a,
            WebhookSecret::derive(b"server key one, 32 bytes or more", Uuid::now_v7(), &salt)
        );
        assert_ne!(
            a,
            WebhookSecret::derive(b"server key one, 32 bytes or more", id, &[2u8; SALT_LEN])
        );
        let stored = StoredSecret::Derived {
            key_id: id,
            salt: &salt,
        };
        assert_eq!(
            WebhookSecret::resolve(stored, None),
            Err(SecretUnavailable::NoServerKey)
        );
        assert_eq!(
            WebhookSecret::resolve(stored, Some(b"server key one, 32 bytes or more")),
            Ok(a)
        );
    }
}
