//! Counters of what the mount did: API calls by operation, errors, throttles, cache hits and
//! misses, refreshes and stale-served answers. Read by `.stats` as JSON.
//!
//! Promises: counting is lock-free and costs an atomic add; nothing here holds a value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use std::sync::Arc;

use crate::backend::ApiCalls;

#[derive(Default)]
pub struct Stats {
    /// Shared with the backend, which counts each API call it makes.
    pub calls: Arc<ApiCalls>,
    pub errors: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub refreshes: AtomicU64,
    pub stale_served: AtomicU64,
}

impl Stats {
    pub fn new(calls: Arc<ApiCalls>) -> Self {
        Stats {
            calls,
            ..Stats::default()
        }
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counters as a JSON document, ending in a newline.
    pub fn to_json(&self, last_good_refresh: Option<Instant>) -> Vec<u8> {
        let calls: serde_json::Map<String, serde_json::Value> = self
            .calls
            .snapshot()
            .into_iter()
            .map(|(op, n)| (op.to_string(), n.into()))
            .collect();
        let doc = serde_json::json!({
            "api_calls": calls,
            "api_errors": self.errors.load(Relaxed),
            "throttles": self.calls.throttles(),
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
