//! Refuses every request (limit 0, back in a second), and panics on requests carrying
//! `x-fault`: the gateway sees a trap and the built-in limits alone decide that request.
//! The validation's smoke call has no keys, so it gets a refusal in time and passes.

use gatehouse_plugin_sdk::{LimitRequest, LimitState, LimitVerdict, NoConfig, RateLimiter, RequestKey, export_plugin};

struct Fixture;

impl RateLimiter for Fixture {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Fixture)
    }

    fn keys(&self) -> Vec<RequestKey> {
        vec![RequestKey::Header("x-fault".into())]
    }

    fn check(&mut self, req: &LimitRequest) -> LimitVerdict {
        if req.key(0).is_some() {
            panic!("fault_limit was asked to fail");
        }
        LimitVerdict::Deny(LimitState {
            limit: 0,
            remaining: 0,
            reset_ms: 1000,
        })
    }
}

export_plugin!(rate_limiter: Fixture);
