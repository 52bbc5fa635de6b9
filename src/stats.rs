//! Counters of what the mount did: API calls by operation, errors, throttles, cache hits and
//! misses, refreshes and stale-served answers, and per group (a directory whose listing was
//! fetched) the age of its last good refresh. Read by `.stats` as JSON and by `--metrics-addr`
//! in the OpenMetrics text format that Prometheus scrapes.
//!
//! Promises: counting is lock-free and costs an atomic add; nothing here holds a value, and
//! both renderings show the same figures under the same names.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    /// Changes from AWS made on the mount for inotify watchers (see `mount::announce`).
    pub announced: AtomicU64,
    /// `--on-change` commands run, failed (non-zero exit or not started) and timed out.
    pub on_change_runs: AtomicU64,
    pub on_change_failures: AtomicU64,
    pub on_change_timeouts: AtomicU64,
    /// Change events (`--events-queue`): messages received; changes applied; messages of no
    /// concern to this mount; messages that are not events.
    pub events_received: AtomicU64,
    pub events_applied: AtomicU64,
    pub events_ignored: AtomicU64,
    pub events_unparseable: AtomicU64,
    /// When a receive from the queue last succeeded, in milliseconds after `origin` (0: never).
    events_last_receive: AtomicU64,
    origin: Origin,
    /// Failed requests from the kernel, by operation and errno (indices into `OPERATIONS` and
    /// `ERRNOS`).
    request_errors: [[AtomicU64; ERRNOS.len()]; OPERATIONS.len()],
}

/// When the figures began: the instant other instants are counted from.
struct Origin(Instant);

impl Default for Origin {
    fn default() -> Self {
        Origin(Instant::now())
    }
}

/// The change events' figures: received, applied, ignored, unparseable, seconds since the last
/// receive, and whether they flow (else the mount polls at its max age).
struct EventFigures {
    counts: [u64; 4],
    since_receive: Option<f64>,
    flowing: bool,
}

/// The kernel's requests whose failures are counted; `modify` is every request that would
/// change the filesystem (all refused as read-only but for `.refresh`).
pub const OPERATIONS: [&str; 9] = [
    "lookup",
    "getattr",
    "setattr",
    "read",
    "write",
    "readdir",
    "getxattr",
    "listxattr",
    "modify",
];
/// Errnos counted by name; any other counts as `other`.
const ERRNOS: [(i32, &str); 8] = [
    (libc::ENOENT, "ENOENT"),
    (libc::EACCES, "EACCES"),
    (libc::EIO, "EIO"),
    (libc::EROFS, "EROFS"),
    (libc::EISDIR, "EISDIR"),
    (libc::ERANGE, "ERANGE"),
    (libc::ENODATA, "ENODATA"),
    (0, "other"),
];

/// One group's last good refresh: its full name (`/app/db`, `prod/`), when, and how many
/// parameters it held.
pub struct Group {
    pub name: String,
    pub refreshed_at: Instant,
    pub parameters: usize,
}

/// The figures at one instant.
pub struct Figures {
    calls: Vec<(&'static str, u64)>,
    errors: u64,
    throttles: u64,
    hits: u64,
    misses: u64,
    refreshes: u64,
    stale_served: u64,
    announced: u64,
    /// `--on-change` runs, failures, timeouts.
    on_change: [u64; 3],
    /// `None` when the mount receives no events.
    events: Option<EventFigures>,
    since_last_good: Option<f64>,
    /// Operation, errno name, failed requests (only those that failed at least once).
    request_errors: Vec<(&'static str, &'static str, u64)>,
    /// Name, seconds since its last good refresh, parameters.
    groups: Vec<(String, f64, usize)>,
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

    /// Counts a request of operation `op` (one of [`OPERATIONS`]) that failed with `errno`.
    pub fn request_failed(&self, op: &str, errno: i32) {
        let op = OPERATIONS
            .iter()
            .position(|o| *o == op)
            .unwrap_or(OPERATIONS.len() - 1);
        let errno = ERRNOS
            .iter()
            .position(|(e, _)| *e == errno)
            .unwrap_or(ERRNOS.len() - 1);
        Stats::bump(&self.request_errors[op][errno]);
    }

    /// Records a successful receive from the events queue.
    pub fn events_received_now(&self) {
        let ms = self.origin.0.elapsed().as_millis().max(1);
        self.events_last_receive
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    /// The figures now. `events`: whether change events flow, `None` without events.
    pub fn figures(
        &self,
        last_good: Option<Instant>,
        groups: &[Group],
        events: Option<bool>,
    ) -> Figures {
        let last_receive = self.events_last_receive.load(Relaxed);
        Figures {
            events: events.map(|flowing| EventFigures {
                counts: [
                    self.events_received.load(Relaxed),
                    self.events_applied.load(Relaxed),
                    self.events_ignored.load(Relaxed),
                    self.events_unparseable.load(Relaxed),
                ],
                since_receive: (last_receive > 0).then(|| {
                    let at = self.origin.0 + std::time::Duration::from_millis(last_receive);
                    at.elapsed().as_secs_f64()
                }),
                flowing,
            }),
            calls: self.calls.snapshot(),
            errors: self.errors.load(Relaxed),
            throttles: self.calls.throttles(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            announced: self.announced.load(Relaxed),
            on_change: [
                self.on_change_runs.load(Relaxed),
                self.on_change_failures.load(Relaxed),
                self.on_change_timeouts.load(Relaxed),
            ],
            since_last_good: last_good.map(|t| t.elapsed().as_secs_f64()),
            request_errors: OPERATIONS
                .iter()
                .zip(&self.request_errors)
                .flat_map(|(op, counts)| {
                    ERRNOS.iter().zip(counts).filter_map(|((_, errno), n)| {
                        let n = n.load(Relaxed);
                        (n > 0).then_some((*op, *errno, n))
                    })
                })
                .collect(),
            groups: groups
                .iter()
                .map(|g| {
                    let age = g.refreshed_at.elapsed().as_secs_f64();
                    (g.name.clone(), age, g.parameters)
                })
                .collect(),
        }
    }
}

impl Figures {
    /// The `.stats` document, ending in a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let calls: serde_json::Map<String, serde_json::Value> = self
            .calls
            .iter()
            .map(|(op, n)| (op.to_string(), (*n).into()))
            .collect();
        let groups: serde_json::Map<String, serde_json::Value> = self
            .groups
            .iter()
            .map(|(name, age, n)| {
                let group = serde_json::json!({
                    "seconds_since_refresh": age,
                    "parameters": n,
                });
                (name.clone(), group)
            })
            .collect();
        let mut request_errors = serde_json::Map::new();
        for (op, errno, n) in &self.request_errors {
            let by_errno = request_errors
                .entry(op.to_string())
                .or_insert_with(|| serde_json::json!({}));
            by_errno[*errno] = (*n).into();
        }
        let mut doc = serde_json::json!({
            "api_calls": calls,
            "api_errors": self.errors,
            "throttles": self.throttles,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "refreshes": self.refreshes,
            "stale_served": self.stale_served,
            "changes_announced": self.announced,
            "on_change": {
                "runs": self.on_change[0],
                "failures": self.on_change[1],
                "timeouts": self.on_change[2],
            },
            "seconds_since_last_good_fetch": self.since_last_good,
            "request_errors": request_errors,
            "groups": groups,
        });
        if let Some(e) = &self.events {
            doc["events"] = serde_json::json!({
                "mode": if e.flowing { "events" } else { "polling" },
                "received": e.counts[0],
                "applied": e.counts[1],
                "ignored": e.counts[2],
                "unparseable": e.counts[3],
                "seconds_since_receive": e.since_receive,
            });
        }
        let mut out = serde_json::to_vec_pretty(&doc).expect("plain JSON");
        out.push(b'\n');
        out
    }

    /// The same figures in the OpenMetrics text format, each name prefixed `ssmfs_`.
    pub fn to_openmetrics(&self) -> String {
        fn counter(registry: &mut Registry, name: &str, help: &str, n: u64) {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            registry.register(name, help, c);
        }
        let mut registry = Registry::with_prefix("ssmfs");
        let calls = Family::<Vec<(String, String)>, Counter>::default();
        for (op, n) in &self.calls {
            calls
                .get_or_create(&vec![("operation".to_string(), op.to_string())])
                .inc_by(*n);
        }
        registry.register("api_calls", "API calls made, by operation", calls);
        counter(
            &mut registry,
            "api_errors",
            "API calls that failed",
            self.errors,
        );
        counter(
            &mut registry,
            "throttles",
            "Attempts AWS throttled",
            self.throttles,
        );
        counter(
            &mut registry,
            "cache_hits",
            "Answers from the cache",
            self.hits,
        );
        counter(
            &mut registry,
            "cache_misses",
            "Answers that needed a fetch",
            self.misses,
        );
        counter(&mut registry, "refreshes", "Fetches made", self.refreshes);
        counter(
            &mut registry,
            "stale_served",
            "Answers from values older than their max age while AWS failed",
            self.stale_served,
        );
        counter(
            &mut registry,
            "changes_announced",
            "Changes from AWS made on the mount for inotify watchers",
            self.announced,
        );
        for (name, help, n) in [
            (
                "on_change_runs",
                "--on-change commands run",
                self.on_change[0],
            ),
            (
                "on_change_failures",
                "--on-change commands that failed or could not start",
                self.on_change[1],
            ),
            (
                "on_change_timeouts",
                "--on-change commands killed at their time limit",
                self.on_change[2],
            ),
        ] {
            counter(&mut registry, name, help, n);
        }
        if let Some(e) = &self.events {
            for (i, (name, help)) in [
                ("events_received", "Messages received from the events queue"),
                ("events_applied", "Changes told by events and applied"),
                (
                    "events_ignored",
                    "Event messages of no concern to this mount",
                ),
                (
                    "events_unparseable",
                    "Messages on the events queue that are not events",
                ),
            ]
            .into_iter()
            .enumerate()
            {
                counter(&mut registry, name, help, e.counts[i]);
            }
            let flowing = Gauge::<i64>::default();
            flowing.set(i64::from(e.flowing));
            registry.register(
                "events_flowing",
                "1 while change events flow, 0 while the mount polls at its max age",
                flowing,
            );
            if let Some(age) = e.since_receive {
                let g = Gauge::<f64, AtomicU64>::default();
                g.set(age);
                registry.register(
                    "events_seconds_since_receive",
                    "Seconds since a receive from the events queue last succeeded",
                    g,
                );
            }
        }
        let request_errors = Family::<Vec<(String, String)>, Counter>::default();
        for (op, errno, n) in &self.request_errors {
            let labels = vec![
                ("operation".to_string(), op.to_string()),
                ("errno".to_string(), errno.to_string()),
            ];
            request_errors.get_or_create(&labels).inc_by(*n);
        }
        registry.register(
            "request_errors",
            "Requests from the kernel that failed, by operation and errno",
            request_errors,
        );
        if let Some(age) = self.since_last_good {
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(age);
            registry.register(
                "seconds_since_last_good_fetch",
                "Seconds since an API call last succeeded",
                g,
            );
        }
        let ages = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
        let sizes = Family::<Vec<(String, String)>, Gauge>::default();
        for (name, age, n) in &self.groups {
            let label = vec![("group".to_string(), name.clone())];
            ages.get_or_create(&label).set(*age);
            sizes
                .get_or_create(&label)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        registry.register(
            "group_seconds_since_refresh",
            "Seconds since each group's listing was last fetched",
            ages,
        );
        registry.register(
            "group_parameters",
            "Parameters in each group at its last refresh",
            sizes,
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Op;

    #[test]
    fn both_renderings_show_the_same_figures() {
        let calls = Arc::new(ApiCalls::default());
        calls.count(Op::GetParametersByPath);
        calls.count(Op::GetParametersByPath);
        let stats = Stats::new(calls);
        Stats::bump(&stats.hits);
        stats.request_failed("lookup", libc::ENOENT);
        stats.request_failed("lookup", libc::ENOENT);
        stats.request_failed("mkdir", libc::EROFS);
        stats.request_failed("read", libc::EBADF);
        let groups = [Group {
            name: "/app \"x\"".to_string(),
            refreshed_at: Instant::now(),
            parameters: 3,
        }];
        Stats::bump(&stats.events_applied);
        stats.events_received_now();
        let figures = stats.figures(Some(Instant::now()), &groups, Some(true));

        let json: serde_json::Value = serde_json::from_slice(&figures.to_json()).unwrap();
        assert_eq!(json["api_calls"]["GetParametersByPath"], 2);
        assert_eq!(json["cache_hits"], 1);
        assert_eq!(json["request_errors"]["lookup"]["ENOENT"], 2);
        assert_eq!(json["request_errors"]["modify"]["EROFS"], 1);
        assert_eq!(json["request_errors"]["read"]["other"], 1);
        assert_eq!(json["groups"]["/app \"x\""]["parameters"], 3);
        assert_eq!(json["events"]["mode"], "events");
        assert_eq!(json["events"]["applied"], 1);
        assert!(json["events"]["seconds_since_receive"].as_f64().unwrap() < 60.0);
        assert!(
            json["groups"]["/app \"x\""]["seconds_since_refresh"]
                .as_f64()
                .unwrap()
                < 60.0
        );

        let text = figures.to_openmetrics();
        assert!(
            text.contains("ssmfs_api_calls_total{operation=\"GetParametersByPath\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ssmfs_cache_hits_total 1\n"), "{text}");
        assert!(text.contains("ssmfs_events_applied_total 1\n"), "{text}");
        assert!(text.contains("ssmfs_events_flowing 1\n"), "{text}");
        assert!(
            text.contains("ssmfs_request_errors_total{operation=\"lookup\",errno=\"ENOENT\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ssmfs_cache_misses_total 0\n"), "{text}");
        assert!(
            text.contains("ssmfs_group_parameters{group=\"/app \\\"x\\\"\"} 3\n"),
            "label values are escaped: {text}"
        );
        assert!(text.contains("# TYPE ssmfs_group_seconds_since_refresh gauge"));
        assert!(text.ends_with("# EOF\n"));
    }
}
