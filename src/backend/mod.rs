//! The remote store behind the mount, as a service-neutral trait: one page of a listing under a
//! path and one value by name, the two calls the filesystem core is built from (SSM:
//! `GetParametersByPath` and `GetParameter`; Secrets Manager: `ListSecrets` with the values of
//! what it lists, and `GetSecretValue`).
//!
//! Implementations: [`ssm::SsmBackend`] and [`secrets::SecretsBackend`] (the AWS SDK),
//! [`memory::MemoryBackend`] (a map that counts calls and injects faults, for unit tests; it does
//! not go through [`ApiCalls::call`]), and [`faulty::FaultyBackend`], which wraps any backend,
//! injects faults per operation and sends every call through [`ApiCalls::call`], so that tests
//! exercise the real retries and pacing. The core does the paging itself so that it can stop
//! early when one page answers its question.
//!
//! Promises: errors carry AWS's error code and message, never a parameter value; every SDK error
//! is classified in one place, [`error::classify`], from the SDK's error variants and the HTTP
//! status, never from a response body.

use std::future::Future;
use std::time::SystemTime;

use crate::content::Content;

#[cfg(test)]
mod canned;
pub mod error;
pub mod faulty;
mod held;
pub mod memory;
pub mod pace;
pub mod secrets;
pub mod ssm;

/// One parameter or secret as fetched, with its value rendered to file content.
#[derive(Clone, Debug)]
pub struct Param {
    /// Full name, e.g. `/app/db/password` or `prod/db`.
    pub name: String,
    pub content: Content,
    /// The version this content is, as the service names it (SSM: "3"; Secrets Manager: a
    /// VersionId). Content never changes within a version.
    pub version: String,
    /// Readable by the owner only (SecureString parameters, secrets).
    pub secret: bool,
    pub modified: SystemTime,
    /// Metadata shown as extended attributes (`user.ssm.*`, `user.sm.*`), as fetched.
    pub xattrs: Vec<(&'static str, String)>,
    /// Why the value could not be read (an AWS error code), if it could not: the name is shown
    /// and reads fail with EACCES.
    pub unreadable: Option<String>,
    /// Made from another value (a key of a JSON secret); a real entry of the same name wins.
    pub derived: bool,
}

#[cfg(test)]
impl Param {
    /// A plain parameter for tests: `value` at `version`, modified `version` seconds after the
    /// epoch (so that versions differ in their identity too).
    pub fn test(name: &str, value: &str, version: u64) -> Param {
        Param {
            name: name.to_string(),
            content: Content::from(value.as_bytes().to_vec()),
            version: version.to_string(),
            secret: false,
            modified: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(version),
            xattrs: Vec::new(),
            unreadable: None,
            derived: false,
        }
    }
}

/// One page of a listing. A page may be empty and still carry a token: keep paging until there
/// is none.
#[derive(Debug, Default)]
pub struct Page {
    pub params: Vec<Param>,
    pub next_token: Option<String>,
}

/// What went wrong talking to AWS. Classified so that the core can decide between serving the
/// last good values (transient) and reporting the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("throttled by AWS: {0}")]
    Throttled(String),
    #[error("AWS credentials were rejected or are missing: {0}")]
    Credentials(String),
    #[error("AWS did not answer: {0}")]
    Unavailable(String),
    #[error("AWS error: {0}")]
    Other(String),
}

impl BackendError {
    /// What kind of failure this is, in a few words.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::AccessDenied(_) => "access denied",
            BackendError::Throttled(_) => "throttled",
            BackendError::Credentials(_) => "credentials",
            BackendError::Unavailable(_) => "no answer",
            BackendError::Other(_) => "error",
        }
    }

    /// Errors that may go away by themselves (outage, throttling, credentials that failed to
    /// renew): the last good values are served meanwhile.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Throttled(_)
                | BackendError::Unavailable(_)
                | BackendError::Credentials(_)
        )
    }
}

/// The API calls ssmfs makes, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    GetParametersByPath,
    GetParameter,
    GetParameters,
    ListSecrets,
    BatchGetSecretValue,
    GetSecretValue,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::GetParametersByPath => "GetParametersByPath",
            Op::GetParameter => "GetParameter",
            Op::GetParameters => "GetParameters",
            Op::ListSecrets => "ListSecrets",
            Op::BatchGetSecretValue => "BatchGetSecretValue",
            Op::GetSecretValue => "GetSecretValue",
        }
    }
}

/// The gate every API call passes: a token bucket that keeps calls to `max_tps` a second over
/// time (so that a sweep of a large tree never throttles the other programs of the account,
/// which share the quota) while letting a burst of [`BURST_SECONDS`] of that rate through at
/// once (so that a cold lookup, or a cold read of a tree of up to about a thousand parameters,
/// goes as fast as AWS answers, as it would without ssmfs), and that counts calls by operation. Shared with the core,
/// which shows the counts in `.stats`.
#[derive(Debug, Default)]
pub struct ApiCalls {
    counts: std::sync::Mutex<std::collections::BTreeMap<Op, u64>>,
    pace: Option<Pace>,
    /// Attempts AWS answered with throttling, including those retried successfully.
    throttles: std::sync::atomic::AtomicU64,
}

/// Attempts of one API call, at most (the first and three retries).
const MAX_ATTEMPTS: u32 = 4;
/// The first retry waits up to this long (full jitter), doubling up to `MAX_RETRY_WAIT`.
const FIRST_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// No retry starts after one call has taken this long: a reader waiting for data it never had
/// gets its answer, or EIO, in bounded time.
pub const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(12);

/// The burst the gate lets through at once, in seconds of its rate: at the default 20 calls a
/// second, 100 calls, the pages of a 1,000-parameter tree.
pub const BURST_SECONDS: u32 = 5;

#[derive(Debug)]
struct Pace {
    interval: std::time::Duration,
    /// How far ahead of now the schedule may run: the burst.
    burst: std::time::Duration,
    /// The instant the schedule has reached: each call moves it on by `interval`.
    next: std::sync::Mutex<tokio::time::Instant>,
    /// The schedule shared by the host's mounts of one account and region, when there is one.
    host: Option<pace::HostPace>,
}

impl ApiCalls {
    /// A gate that lets through at most `max_tps` calls a second over time, with bursts of
    /// [`BURST_SECONDS`] of that rate (`0`: no limit).
    pub fn paced(max_tps: u32) -> Self {
        ApiCalls {
            counts: Default::default(),
            throttles: Default::default(),
            pace: (max_tps > 0).then(|| {
                let interval = std::time::Duration::from_secs(1) / max_tps;
                Pace {
                    interval,
                    burst: interval * max_tps * BURST_SECONDS,
                    next: std::sync::Mutex::new(tokio::time::Instant::now()),
                    host: None,
                }
            }),
        }
    }

    /// A gate as [`ApiCalls::paced`] makes, whose schedule is shared with every gate that
    /// opens the file at `path` (the host's mounts of one account and region; see [`pace`]).
    /// If the file cannot be opened, the gate paces alone.
    pub fn paced_on_host(max_tps: u32, path: &std::path::Path) -> Self {
        let mut calls = ApiCalls::paced(max_tps);
        if let Some(pace) = &mut calls.pace {
            match pace::HostPace::open(path, pace.interval, pace.burst) {
                Ok(host) => pace.host = Some(host),
                Err(err) => tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "--max-tps: cannot share the pace with the host's other mounts; pacing alone"
                ),
            }
        }
        calls
    }

    /// Waits for this call's slot, then counts it.
    pub async fn start(&self, op: Op) {
        if let Some(pace) = &self.pace {
            let shared = pace
                .host
                .as_ref()
                .and_then(|h| h.reserve(pace::monotonic_now()).ok());
            match shared {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    let slot = {
                        let mut next = pace.next.lock().unwrap();
                        // An idle gate starts from now: it earns at most `burst` of credit.
                        let scheduled = (*next).max(tokio::time::Instant::now()) + pace.interval;
                        *next = scheduled;
                        scheduled.checked_sub(pace.burst).unwrap_or(scheduled)
                    };
                    tokio::time::sleep_until(slot).await;
                }
            }
        }
        self.count(op);
    }

    pub fn count(&self, op: Op) {
        *self.counts.lock().unwrap().entry(op).or_default() += 1;
    }

    /// Makes one API call through the gate, retrying throttling and transient failures with
    /// exponential back-off and full jitter, a bounded number of times and within
    /// `CALL_DEADLINE`. Every attempt is paced and counted.
    pub async fn call<T, F, Fut>(&self, op: Op, mut attempt: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        // Tokio's clock, like the pacing and the back-off: the same as the system's in the
        // daemon, and one that tests on a paused clock can see pass.
        let started = tokio::time::Instant::now();
        let mut wait = FIRST_RETRY_WAIT;
        for n in 1.. {
            self.start(op).await;
            let result = attempt().await;
            if let Err(BackendError::Throttled(_)) = &result {
                self.throttles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            match result {
                Err(err) if retryable(&err) && n < MAX_ATTEMPTS => {
                    let pause = wait.mul_f64(fastrand::f64());
                    if started.elapsed() + pause > CALL_DEADLINE {
                        return Err(err);
                    }
                    tokio::time::sleep(pause).await;
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                }
                result => return result,
            }
        }
        unreachable!("the loop returns")
    }

    /// Attempts AWS answered with throttling.
    pub fn throttles(&self) -> u64 {
        self.throttles.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, op: Op) -> u64 {
        self.counts.lock().unwrap().get(&op).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// The operations called so far, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .map(|(op, n)| (op.as_str(), *n))
            .collect()
    }
}

/// Whether trying again may help: throttling and failures of AWS or the network, not errors in
/// what was asked or who asked.
fn retryable(err: &BackendError) -> bool {
    matches!(
        err,
        BackendError::Throttled(_) | BackendError::Unavailable(_)
    )
}

/// A source of parameters or secrets. `path` is a full name prefix as the service spells it
/// (`/app`, `/` for all SSM parameters; `prod/`, `` for all secrets).
pub trait Backend: Send + Sync + 'static {
    /// The counts of the API calls this backend made.
    fn api_calls(&self) -> std::sync::Arc<ApiCalls>;

    /// One page of what is at or below `path`, with values (`recursive`: the whole subtree;
    /// otherwise only what is directly in `path`). A page may be empty and still carry a token.
    fn list(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<Page, BackendError>> + Send;

    /// One value by its full name, which may end in a selector (`:3`, `:label`, a Secrets
    /// Manager stage or version id); `Ok(None)` when it or that version does not exist.
    fn get(&self, name: &str) -> impl Future<Output = Result<Option<Param>, BackendError>> + Send;

    /// Several values by full name in one call (SSM: `GetParameters`), answered in the order
    /// asked. At most [`Backend::batch_size`] names, each of a different parameter (a base name
    /// appears once, with or without a selector): an answer is matched to its question by name.
    /// Backends without such a call ask name by name.
    fn get_many(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Param>>, BackendError>> + Send {
        async move {
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                found.push(self.get(name).await?);
            }
            Ok(found)
        }
    }

    /// The most names [`Backend::get_many`] takes in one call; 1 when it has no call of its own.
    fn batch_size(&self) -> usize {
        1
    }

    /// Whether `get` answers for every name a listing can show. When it cannot (the
    /// listing is filtered, or shows keys of JSON secrets), the core lists instead.
    fn gets_every_name(&self) -> bool {
        true
    }

    /// The most a page of a listing holds: what a page of a sweep brings, at best.
    fn page_size(&self) -> usize {
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On tokio's paused clock, time moves only when every task waits: the pacing is measured
    /// exactly, without real sleeps.
    #[tokio::test(start_paused = true)]
    async fn calls_are_paced_to_max_tps() {
        let calls = std::sync::Arc::new(ApiCalls::paced(5));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..35)
            .map(|_| {
                let calls = calls.clone();
                tokio::spawn(async move { calls.start(Op::GetParameter).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(calls.get(Op::GetParameter), 35);
        // 5 a second with a burst of 25 (5 seconds' worth): 25 calls go at once, the other ten
        // follow 200 ms apart.
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_the_rate_holds_over_time() {
        let calls = ApiCalls::paced(20);
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            calls.start(Op::GetParameter).await;
        }
        assert_eq!(
            start.elapsed(),
            std::time::Duration::ZERO,
            "a burst of 100 is not delayed"
        );
        for _ in 0..200 {
            calls.start(Op::GetParameter).await;
        }
        // 300 calls at 20 a second, 100 of them free: 10 s.
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(10));
        // Idle for a minute, the gate has earned its burst back, and no more.
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let idle = tokio::time::Instant::now();
        for _ in 0..120 {
            calls.start(Op::GetParameter).await;
        }
        assert_eq!(idle.elapsed(), std::time::Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_with_backoff_and_counted() {
        let calls = ApiCalls::paced(0);
        let mut n = 0;
        let result = calls
            .call(Op::GetParameter, || {
                n += 1;
                let answer = if n < 3 {
                    Err(BackendError::Throttled("ThrottlingException".into()))
                } else {
                    Ok(n)
                };
                async move { answer }
            })
            .await;
        assert_eq!(result, Ok(3), "throttled twice, then answered");
        assert_eq!((calls.get(Op::GetParameter), calls.throttles()), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_errors_that_cannot_pass_are_not_retried() {
        let calls = ApiCalls::paced(0);
        let down = calls
            .call(Op::GetParameter, || async {
                Err::<(), _>(BackendError::Unavailable("connection refused".into()))
            })
            .await;
        assert!(down.is_err());
        assert_eq!(calls.get(Op::GetParameter), u64::from(MAX_ATTEMPTS));
        let denied = calls
            .call(Op::GetParametersByPath, || async {
                Err::<(), _>(BackendError::AccessDenied("no".into()))
            })
            .await;
        assert!(denied.is_err());
        assert_eq!(
            calls.get(Op::GetParametersByPath),
            1,
            "access denied is final"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_no_limit() {
        let calls = ApiCalls::paced(0);
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            calls.start(Op::GetParameter).await;
        }
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    }
}
