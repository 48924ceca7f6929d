//! Refuses every request (limit 0, back in a second), and panics on requests carrying
//! `x-fault: 1`: the gateway sees a trap and the built-in limits alone decide that request.
//! The validation's smoke calls (keys absent, then present with another value) get a
//! refusal in time and pass.

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
        if req.key(0) == Some(gatehouse_plugin_sdk::key_hash("1")) {
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
