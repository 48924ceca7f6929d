//! The retry budget of one service: requests and retries in flight, so retries stay
//! a bounded share of traffic and never multiply an outage. Shared by every snapshot
//! that serves the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The retry budget of one service, shared by every snapshot that serves it.
#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Requests of this service in flight at the gateway (retry budget base).
    pub active_requests: AtomicU32,
    /// Retries in flight.
    pub active_retries: AtomicU32,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: AtomicU64,
}

impl RetryBudget {
    /// Counts a request as active until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> BudgetGuard {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        BudgetGuard {
            budget: self.clone(),
            retry: false,
        }
    }

    /// Reserves a retry if the budget allows: retries in flight stay under
    /// `percent` of active requests, with `min_concurrent` always allowed.
    pub fn try_start_retry(self: &Arc<Self>, percent: f64, min_concurrent: u32) -> Option<BudgetGuard> {
        let active = self.active_requests.load(Ordering::Relaxed);
        let allowed = ((f64::from(active) * percent / 100.0) as u32).max(min_concurrent);
        let ok = self
            .active_retries
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| (r < allowed).then_some(r + 1))
            .is_ok();
        if ok {
            Some(BudgetGuard {
                budget: self.clone(),
                retry: true,
            })
        } else {
            self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The budget slot of the retry a request has in flight: holding a new one gives
/// the previous one back, and dropping the holder (the request ended) gives back the
/// last.
#[derive(Debug, Default)]
pub struct RetrySlot(Option<BudgetGuard>);

impl RetrySlot {
    /// Holds `guard` for the retry that starts now, releasing the previous retry's.
    pub fn hold(&mut self, guard: BudgetGuard) {
        self.0 = Some(guard);
    }
}

/// Ends an active request or retry when dropped.
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Arc<RetryBudget>,
    retry: bool,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let counter = if self.retry {
            &self.budget.active_retries
        } else {
            &self.budget.active_requests
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget() {
        let live = Arc::new(RetryBudget::default());
        let reqs: Vec<_> = (0..20).map(|_| live.start_request()).collect();
        // 20 % of 20 = 4, min 3.
        let retries: Vec<_> = (0..10).filter_map(|_| live.try_start_retry(20.0, 3)).collect();
        assert_eq!(retries.len(), 4);
        assert_eq!(live.budget_exhausted.load(Ordering::Relaxed), 6);
        drop(retries);
        drop(reqs);
        assert_eq!(live.active_requests.load(Ordering::Relaxed), 0);
        assert_eq!(live.active_retries.load(Ordering::Relaxed), 0);
    }
}
