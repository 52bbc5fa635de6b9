//! The lock the core and the flights use: std's, or shuttle's under the `shuttle` feature, so
//! that concurrency tests explore the interleavings of the real code (`cargo test --features
//! shuttle --lib shuttle`).

#[cfg(feature = "shuttle")]
pub use shuttle::sync::Mutex;
#[cfg(not(feature = "shuttle"))]
pub use std::sync::Mutex;
