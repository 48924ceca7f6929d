//! The answer to a request that a rate limit or quota refused: 429 (limited), 403
//! (quota spent) or 503 (the shared store cannot be checked), with `Retry-After`
//! and the `RateLimit-*` headers.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::Body;
use super::error::{full, json_error};
use crate::ratelimit::{Decision, QUOTA_RULE, ceil_secs};

/// The response for a refusal (for [`Decision::Allow`], an empty 200).
pub fn refusal(decision: &Decision) -> Response<Body> {
    let (status, code, msg, retry) = match decision {
        Decision::Allow { .. } => return Response::new(full("")),
        Decision::Limited { rule, retry_after, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit {rule:?} exceeded; retry after {} s",
                ceil_secs(*retry_after).max(1)
            ),
            *retry_after,
        ),
        Decision::QuotaExceeded { rule, retry_after } => (
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            format!(
                "the {} is spent; it resets in {} s",
                if rule.as_ref() == QUOTA_RULE {
                    "quota".to_string()
                } else {
                    format!("quota {rule:?}")
                },
                ceil_secs(*retry_after).max(1)
            ),
            *retry_after,
        ),
        Decision::Unavailable { rule, retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limit_unavailable",
            format!("rate limit {rule:?} cannot be checked: its shared store is unreachable"),
            *retry_after,
        ),
    };
    let mut resp = json_error(status, code, &msg);
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(retry).max(1)));
    if let Decision::Limited { headers, .. } = decision {
        headers.apply(h);
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::{RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET, RateHeaders};

    #[test]
    fn refusals_name_the_rule() {
        let resp = refusal(&Decision::Limited {
            rule: "per-client".into(),
            retry_after: Duration::from_millis(100),
            headers: RateHeaders {
                limit: 10,
                remaining: 0,
                reset: Duration::from_millis(1500),
            },
        });
        assert_eq!(resp.status(), 429);
        let h = resp.headers();
        assert_eq!(h[header::RETRY_AFTER], "1");
        assert_eq!(h[&RATELIMIT_LIMIT], "10");
        assert_eq!(h[&RATELIMIT_REMAINING], "0");
        assert_eq!(h[&RATELIMIT_RESET], "2");
        let resp = refusal(&Decision::QuotaExceeded {
            rule: "quota".into(),
            retry_after: Duration::from_secs(3600),
        });
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3600");
        let resp = refusal(&Decision::Unavailable {
            rule: "shared".into(),
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(resp.status(), 503);
    }
}
