//! Reading admin request bodies: a size limit (413 past it) and JSON decoding that
//! tells malformed JSON (400 `malformed_json`) from JSON of the wrong shape
//! (400 `invalid_body`, with the key path).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::error::AdminError;

/// Largest JSON body of the node, publish and version endpoints.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Largest config import.
pub const MAX_CONFIG_BODY: usize = 16 * 1024 * 1024;

/// Past the limit, up to this many times the limit is still read and thrown
/// away (for at most [`DRAIN_TIME`]) so that the client, still sending, gets the
/// 413 instead of a broken connection.
const DRAIN_FACTOR: usize = 4;
/// Longest time spent draining an oversized body.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body, refusing more than `limit` bytes (413), whether
/// `Content-Length` says so up front or the body runs past the limit.
pub async fn read(headers: &HeaderMap, mut body: Incoming, limit: usize) -> Result<Bytes, AdminError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut buf = BytesMut::new();
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut seen = 0usize;
    let drain = tokio::time::sleep(DRAIN_TIME);
    tokio::pin!(drain);
    loop {
        let frame = if too_large {
            tokio::select! {
                _ = &mut drain => break,
                f = body.frame() => f,
            }
        } else {
            body.frame().await
        };
        let data = match frame {
            None => break,
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
            Some(Err(e)) if too_large => {
                tracing::debug!(error = %e, "oversized admin body ended early");
                break;
            }
            Some(Err(e)) => {
                return Err(AdminError::bad_request(
                    "bad_body",
                    format!("cannot read the request body: {e}"),
                    None,
                ));
            }
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            too_large = true;
            buf.clear();
            if seen > limit.saturating_mul(DRAIN_FACTOR) {
                break;
            }
        } else if !too_large {
            buf.extend_from_slice(&data);
        }
    }
    if too_large {
        Err(AdminError::BodyTooLarge { limit })
    } else {
        Ok(buf.freeze())
    }
}

/// Decodes a JSON body as `T`.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let path = (path != ".").then_some(path);
            AdminError::bad_request("invalid_body", inner.to_string(), path)
        } else {
            malformed(&inner)
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> AdminError {
    AdminError::bad_request("malformed_json", format!("malformed JSON: {e}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawNode;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nodes {
        #[allow(dead_code)]
        nodes: Vec<RawNode>,
    }

    fn code(e: AdminError) -> (&'static str, Option<String>) {
        match e {
            AdminError::BadRequest { code, path, .. } => (code, path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_and_misshapen_json() {
        assert_eq!(code(json::<Nodes>(b"{\"nodes\": [").unwrap_err()).0, "malformed_json");
        assert_eq!(
            code(json::<Nodes>(br#"{"nodes": []} x"#).unwrap_err()).0,
            "malformed_json"
        );
        let (c, path) = code(json::<Nodes>(br#"{"nodes": [{"host": "h", "port": "x"}]}"#).unwrap_err());
        assert_eq!(c, "invalid_body");
        assert_eq!(path.as_deref(), Some("nodes[0].port"));
        assert!(json::<Nodes>(br#"{"nodes": [{"host": "h", "port": 1}]}"#).is_ok());
    }
}
