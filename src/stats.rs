//! Counters of what the mount did: API calls by operation, errors, throttles, cache hits and
//! misses, refreshes and stale-served answers. Read by `.stats` as JSON.
//!
//! Promises: counting is lock-free and costs an atomic add; nothing here holds a value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::backend::Op;

#[derive(Default)]
pub struct Stats {
    pub get_parameters_by_path: AtomicU64,
    pub get_parameter: AtomicU64,
    pub errors: AtomicU64,
    pub throttles: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub refreshes: AtomicU64,
    pub stale_served: AtomicU64,
}

impl Stats {
    pub fn call(&self, op: Op) {
        match op {
            Op::GetParametersByPath => &self.get_parameters_by_path,
            Op::GetParameter => &self.get_parameter,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn calls(&self, op: Op) -> u64 {
        match op {
            Op::GetParametersByPath => &self.get_parameters_by_path,
            Op::GetParameter => &self.get_parameter,
        }
        .load(Relaxed)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counters as a JSON document, ending in a newline.
    pub fn to_json(&self, last_good_refresh: Option<Instant>) -> Vec<u8> {
        let calls: serde_json::Map<String, serde_json::Value> = Op::ALL
            .iter()
            .map(|op| (op.as_str().to_string(), self.calls(*op).into()))
            .collect();
        let doc = serde_json::json!({
            "api_calls": calls,
            "api_errors": self.errors.load(Relaxed),
            "throttles": self.throttles.load(Relaxed),
            "cache_hits": self.hits.load(Relaxed),
            "cache_misses": self.misses.load(Relaxed),
            "refreshes": self.refreshes.load(Relaxed),
            "stale_served": self.stale_served.load(Relaxed),
            "seconds_since_last_good_fetch": last_good_refresh.map(|t| t.elapsed().as_secs_f64()),
        });
        let mut out = serde_json::to_vec_pretty(&doc).expect("plain JSON");
        out.push(b'\n');
        out
    }
}
