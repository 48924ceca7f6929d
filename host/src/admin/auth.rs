//! Bearer-token check for admin writes.

use http::{HeaderMap, header};

use super::error::AdminError;

/// Checks `Authorization: Bearer <token>` against the configured token. Without a
/// configured token every request passes (the listener is then loopback only).
pub fn check(expected: Option<&str>, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(expected) = expected else { return Ok(()) };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AdminError::Unauthorized);
    };
    let value = value.to_str().map_err(|_| AdminError::Forbidden)?;
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(AdminError::Unauthorized);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AdminError::Unauthorized);
    }
    if constant_time_eq(token.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(AdminError::Forbidden)
    }
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn token_rules() {
        assert!(check(None, &with(None)).is_ok());
        assert!(matches!(
            check(Some("s3cret"), &with(None)),
            Err(AdminError::Unauthorized)
        ));
        assert!(matches!(
            check(Some("s3cret"), &with(Some("Basic abc"))),
            Err(AdminError::Unauthorized)
        ));
        assert!(matches!(
            check(Some("s3cret"), &with(Some("Bearer wrong"))),
            Err(AdminError::Forbidden)
        ));
        assert!(matches!(
            check(Some("s3cret"), &with(Some("Bearer s3cre"))),
            Err(AdminError::Forbidden)
        ));
        assert!(check(Some("s3cret"), &with(Some("Bearer s3cret"))).is_ok());
        assert!(check(Some("s3cret"), &with(Some("bearer  s3cret "))).is_ok());
    }
}
