//! The `grpc` active probe: one `grpc.health.v1.Health/Check` call on a new HTTP/2
//! connection (h2c, or TLS with ALPN `h2` for `grpcs` upstreams). The two
//! messages have one field each, so they are encoded by hand:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }` (`SERVING` = 1).

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};

use crate::health::{Observed, PROBE_USER_AGENT, ProbeSpec};
use crate::upstream::h2;

/// The health service's method path.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// `grpc-status` UNKNOWN: the answer carried no status.
const UNKNOWN: u8 = 2;
/// `grpc-status` UNAVAILABLE: what `NOT_SERVING` (or any status but `SERVING`) counts as.
const UNAVAILABLE: u8 = 14;

/// Calls `Health/Check` for `spec.grpc_service` over `stream` (already connected,
/// TLS done): `Grpc(0)` when the node is `SERVING`, `Grpc(14)` when it says
/// anything else, `Grpc(code)` when the call fails with a status, `Status` when
/// the answer is not a gRPC one, `Reset` when the connection or the answer breaks.
pub async fn check<S>(spec: &ProbeSpec, stream: S, tls: bool) -> Observed
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut sender) = h2::handshake::<Full<Bytes>, _>(stream).await else {
        return Observed::Reset;
    };
    let scheme = if tls { "https" } else { "http" };
    let Ok(authority) = spec.host_header.to_str() else {
        return Observed::Reset;
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{authority}{HEALTH_CHECK_PATH}"))
        .version(http::Version::HTTP_2)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
        .header(TE, HeaderValue::from_static("trailers"))
        .header(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT))
        .body(Full::new(encode_request(&spec.grpc_service)));
    let Ok(mut req) = req else {
        return Observed::Reset;
    };
    for (name, value) in &spec.headers {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let Ok(resp) = sender.send_request(req).await else {
        return Observed::Reset;
    };
    if resp.status() != http::StatusCode::OK {
        return Observed::Status(resp.status().as_u16());
    }
    // A trailers-only answer carries its status in the head.
    if let Some(code) = grpc_status(resp.headers())
        && code != 0
    {
        return Observed::Grpc(code);
    }
    let head_status = grpc_status(resp.headers());
    let Ok(collected) = resp.into_body().collect().await else {
        return Observed::Reset;
    };
    let status = collected.trailers().and_then(grpc_status).or(head_status);
    match status {
        Some(0) => {}
        Some(code) => return Observed::Grpc(code),
        None => return Observed::Grpc(UNKNOWN),
    }
    match decode_response(&collected.to_bytes()) {
        Some(SERVING) => Observed::Grpc(0),
        Some(_) => Observed::Grpc(UNAVAILABLE),
        None => Observed::Reset,
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.extend_from_slice(&[(v as u8) | 0x80]);
        v >>= 7;
    }
    out.extend_from_slice(&[v as u8]);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// One gRPC message (uncompressed) holding `HealthCheckRequest { service }`.
pub fn encode_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.extend_from_slice(&[0x0a]); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out.freeze()
}

/// The `status` of the one `HealthCheckResponse` message in `body` (0, UNKNOWN,
/// when the field is absent); `None` when the body is not one uncompressed
/// message of that shape.
pub fn decode_response(body: &[u8]) -> Option<u64> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let tag = get_varint(&mut msg)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 1) => msg = msg.get(8..)?,
            (_, 2) => {
                let n = usize::try_from(get_varint(&mut msg)?).ok()?;
                msg = msg.get(n..)?;
            }
            (_, 5) => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_protobuf() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&encode_request("svc")[..], &[0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']);
        let long = "x".repeat(200);
        let framed = encode_request(&long);
        assert_eq!(&framed[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn responses_are_read_past_unknown_fields() {
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(decode_response(&[0, 0, 0, 0, 0]), Some(0), "absent field: UNKNOWN");
        // An unknown string field 2 before the status.
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 1]),
            Some(SERVING)
        );
        assert_eq!(decode_response(&[1, 0, 0, 0, 2, 0x08, 1]), None, "compressed");
        assert_eq!(decode_response(&[0, 0, 0, 0, 9, 0x08, 1]), None, "truncated");
        assert_eq!(decode_response(&[0, 0, 0, 0, 1, 0x0b]), None, "bad wire type");
        assert_eq!(decode_response(&[]), None);
    }
}
