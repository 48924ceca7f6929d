//! Panics on every observation of a 5xx status: the gateway sees a trap and classifies
//! the observation with the built-in evaluator. Anything else it leaves to the built-in
//! (`builtin`), so the validation's smoke call (a fast 200) passes.

use gatehouse_plugin_sdk::{HealthEvaluator, HealthVerdict, NoConfig, Observation, Observed, export_plugin};

struct Fixture;

impl HealthEvaluator for Fixture {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Fixture)
    }

    fn evaluate(&mut self, o: &Observation) -> HealthVerdict {
        match o.observed {
            Observed::Status(s) if s >= 500 => panic!("fault_health was shown a {s}"),
            _ => HealthVerdict::Builtin,
        }
    }
}

export_plugin!(health_evaluator: Fixture);
