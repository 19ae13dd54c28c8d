//! Parsers shared by the settings of every crate.

use secrecy::SecretString;

/// Parses a connection URL whose scheme is one of `schemes` into a secret: it may carry a
/// password, so it never prints, not even in `Debug`. The error names no part of the URL.
pub fn secret_url(s: &str, schemes: &[&str]) -> Result<SecretString, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !schemes.contains(&u.scheme()) {
        let wanted: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(format!(
            "scheme must be {}, not {}://",
            wanted.join(" or "),
            u.scheme()
        ));
    }
    Ok(SecretString::from(s))
}

/// Parses a byte size: a plain number of bytes or one with a unit (`64KiB`, `5GiB`, `2GB`).
pub fn byte_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{s}' is not a byte size like 1048576, 512MiB or 5GiB: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn urls_are_checked_and_never_printed() {
        let u = secret_url("postgres://u:hunter2@127.0.0.1/x", &["postgres"]).unwrap();
        assert_eq!(u.expose_secret(), "postgres://u:hunter2@127.0.0.1/x");
        assert!(!format!("{u:?}").contains("hunter2"));
        let e =
            secret_url("mysql://u:hunter2@127.0.0.1/x", &["postgres", "postgresql"]).unwrap_err();
        assert!(
            e.contains("postgres:// or postgresql://") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(secret_url("127.0.0.1:6379", &["redis"]).is_err());
    }

    #[test]
    fn byte_sizes_take_units() {
        assert_eq!(byte_size("1048576").unwrap(), 1 << 20);
        assert_eq!(byte_size("5GiB").unwrap(), 5 << 30);
        assert_eq!(byte_size("2 GB").unwrap(), 2_000_000_000);
        assert!(byte_size("lots").is_err());
    }
}
