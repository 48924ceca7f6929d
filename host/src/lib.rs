//! Gatehouse: an API gateway that keeps API backends available when nodes, zones
//! or regions fail, and that users extend with sandboxed WebAssembly plugins.
//!
//! The module map and the rules of the request path are in `docs/ARCHITECTURE.md`.

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod control;
pub mod demo;
pub mod events;
pub mod fswatch;
pub mod health;
pub mod metrics;
pub mod outcome;
pub mod plugin;
pub mod proxy;
pub mod ratelimit;
pub mod retry;
pub mod router;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod zone;

pub use app::{Gateway, StartOptions};
