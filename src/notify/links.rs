//! Signed, expiring acknowledge links: `{public_url}/ack/{incident}?p={person}&exp={unix s}&sig=`
//! where `sig = base64url(HMAC-SHA256(key, "ack:{incident}:{person}:{exp}"))`. Opening the link
//! shows the incident and a button (a GET never acknowledges: chat apps prefetch links).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], incident: i64, person: &str, exp: i64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("ack:{incident}:{person}:{exp}").as_bytes());
    m
}

pub fn sign(key: &[u8], incident: i64, person: &str, exp: i64) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, incident, person, exp).finalize().into_bytes())
}

/// The link's query string (after `?`).
pub fn query(key: &[u8], incident: i64, person: &str, exp: i64) -> String {
    let sig = sign(key, incident, person, exp);
    let p: String = person
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    format!("p={p}&exp={exp}&sig={sig}")
}

#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    BadSignature,
    Expired,
}

/// Check a link (constant-time comparison); `now_s` in Unix seconds.
pub fn verify(
    key: &[u8],
    incident: i64,
    person: &str,
    exp: i64,
    sig: &str,
    now_s: i64,
) -> Result<(), LinkError> {
    let Ok(raw) = URL_SAFE_NO_PAD.decode(sig.trim()) else {
        return Err(LinkError::BadSignature);
    };
    mac(key, incident, person, exp)
        .verify_slice(&raw)
        .map_err(|_| LinkError::BadSignature)?;
    if now_s > exp {
        return Err(LinkError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_links_verify_and_expire() {
        let key = b"0123456789abcdef0123456789abcdef";
        let sig = sign(key, 7, "zhang", 1000);
        assert_eq!(verify(key, 7, "zhang", 1000, &sig, 999), Ok(()));
        assert_eq!(
            verify(key, 7, "zhang", 1000, &sig, 1001),
            Err(LinkError::Expired)
        );
        assert_eq!(
            verify(key, 8, "zhang", 1000, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            verify(key, 7, "li", 1000, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            verify(key, 7, "zhang", 2000, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            verify(b"another key of some length", 7, "zhang", 1000, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            verify(key, 7, "zhang", 1000, "!!not base64", 999),
            Err(LinkError::BadSignature)
        );
    }
}
