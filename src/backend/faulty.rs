//! For tests: a [`Backend`] that wraps any other and injects faults per operation (throttling a
//! number of times, an outage until cleared, latency, access denied), with every call going
//! through the real [`ApiCalls::call`]: the same pacing, retries, back-off and deadline as the
//! AWS backends. On tokio's paused clock, tests see exactly how many attempts a call made and how
//! long it took, without sleeping.
//!
//! Counting: the wrapper's [`ApiCalls`] counts every attempt, injected failures included; the
//! inner backend counts only those that reached it. Wrap a backend that does not retry by itself
//! (such as [`super::memory::MemoryBackend`]): the AWS backends already call through their own
//! `ApiCalls`, so wrapped, their retries would nest in the wrapper's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ApiCalls, Backend, BackendError, Op, Page, Param};

/// The faults set on one operation. Each attempt takes the first that applies, in this order:
/// latency (always, before anything else), access denied, outage, throttling.
#[derive(Clone, Debug, Default)]
struct Faults {
    latency: Option<Duration>,
    denied: bool,
    outage: bool,
    /// Attempts still to be throttled.
    throttle: u32,
}

pub struct FaultyBackend<B: Backend> {
    inner: B,
    calls: Arc<ApiCalls>,
    faults: Mutex<HashMap<Op, Faults>>,
    /// The operations the two trait methods count as.
    list_op: Op,
    get_op: Op,
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner`, with calls paced by `calls` and counted as SSM's operations.
    pub fn new(inner: B, calls: Arc<ApiCalls>) -> Self {
        FaultyBackend {
            inner,
            calls,
            faults: Mutex::default(),
            list_op: Op::GetParametersByPath,
            get_op: Op::GetParameter,
        }
    }

    /// Counts (and keys faults) as other operations, e.g. `ListSecrets` and `GetSecretValue`.
    pub fn with_ops(mut self, list: Op, get: Op) -> Self {
        self.list_op = list;
        self.get_op = get;
        self
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn set(&self, op: Op, f: impl FnOnce(&mut Faults)) {
        f(self.faults.lock().unwrap().entry(op).or_default());
    }

    /// Answers the next `times` attempts of `op` with throttling.
    pub fn throttle(&self, op: Op, times: u32) {
        self.set(op, |f| f.throttle = times);
    }

    /// Answers every attempt of `op` as an outage (no answer) until cleared.
    pub fn outage(&self, op: Op, down: bool) {
        self.set(op, |f| f.outage = down);
    }

    /// Delays every attempt of `op` by `latency` (`None`: no delay).
    pub fn latency(&self, op: Op, latency: Option<Duration>) {
        self.set(op, |f| f.latency = latency);
    }

    /// Answers every attempt of `op` with access denied until cleared.
    pub fn deny(&self, op: Op, denied: bool) {
        self.set(op, |f| f.denied = denied);
    }

    /// Clears every fault of every operation.
    pub fn clear(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// One attempt's fault, if any: waits out the latency, then says how the attempt fails.
    async fn inject(&self, op: Op) -> Result<(), BackendError> {
        let latency = self.faults.lock().unwrap().get(&op).and_then(|f| f.latency);
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        let mut faults = self.faults.lock().unwrap();
        let Some(f) = faults.get_mut(&op) else {
            return Ok(());
        };
        let name = op.as_str();
        if f.denied {
            return Err(BackendError::AccessDenied(format!(
                "injected: not authorized to perform {name}"
            )));
        }
        if f.outage {
            return Err(BackendError::Unavailable(format!(
                "injected: {name}: connection refused"
            )));
        }
        if f.throttle > 0 {
            f.throttle -= 1;
            return Err(BackendError::Throttled(format!(
                "ThrottlingException: injected: {name}: rate exceeded"
            )));
        }
        Ok(())
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn api_calls(&self) -> Arc<ApiCalls> {
        self.calls.clone()
    }

    fn gets_every_name(&self) -> bool {
        self.inner.gets_every_name()
    }

    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    async fn list(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> Result<Page, BackendError> {
        self.calls
            .call(self.list_op, || async {
                self.inject(self.list_op).await?;
                self.inner.list(path, recursive, next_token.clone()).await
            })
            .await
    }

    async fn get(&self, name: &str) -> Result<Option<Param>, BackendError> {
        self.calls
            .call(self.get_op, || async {
                self.inject(self.get_op).await?;
                self.inner.get(name).await
            })
            .await
    }

    fn batch_size(&self) -> usize {
        // Batched as SSM's GetParameters only when counted as SSM.
        if self.get_op == Op::GetParameter {
            self.inner.batch_size()
        } else {
            1
        }
    }

    async fn get_many(&self, names: &[String]) -> Result<Vec<Option<Param>>, BackendError> {
        self.calls
            .call(Op::GetParameters, || async {
                self.inject(Op::GetParameters).await?;
                self.inner.get_many(names).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{CALL_DEADLINE, MAX_ATTEMPTS};
    use crate::content::ParamType;
    use tokio::time::Instant;

    fn faulty(max_tps: u32) -> FaultyBackend<MemoryBackend> {
        let memory = MemoryBackend::new();
        memory.put("/app/name", ParamType::String, "demo");
        memory.put("/app/db/password", ParamType::SecureString, "pw");
        FaultyBackend::new(memory, Arc::new(ApiCalls::paced(max_tps)))
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_twice_then_answered_costs_three_attempts() {
        let b = faulty(0);
        b.throttle(Op::GetParameter, 2);
        let start = Instant::now();
        let got = b.get("/app/name").await.unwrap().unwrap();
        assert_eq!(got.content.as_bytes(), b"demo");
        let calls = b.api_calls();
        assert_eq!(
            calls.get(Op::GetParameter),
            3,
            "two throttled attempts and one answer"
        );
        assert_eq!(calls.throttles(), 2);
        assert_eq!(
            b.inner().calls(Op::GetParameter),
            1,
            "only the answer reached it"
        );
        // Two back-offs, of at most 100 ms and 200 ms (full jitter).
        assert!(
            start.elapsed() <= Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_retried_max_attempts_times_then_surfaces_as_unavailable() {
        let b = faulty(0);
        b.outage(Op::GetParametersByPath, true);
        let err = b.list("/app", true, None).await.unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
        assert!(err.is_transient());
        let calls = b.api_calls();
        assert_eq!(calls.get(Op::GetParametersByPath), u64::from(MAX_ATTEMPTS));
        assert_eq!(calls.throttles(), 0);
        assert_eq!(b.inner().total_calls(), 0, "nothing reached the store");

        b.outage(Op::GetParametersByPath, false);
        let page = b.list("/app", true, None).await.unwrap();
        assert_eq!(page.params.len(), 2, "answered once the outage is cleared");
    }

    #[tokio::test(start_paused = true)]
    async fn access_denied_is_not_retried() {
        let b = faulty(0);
        b.deny(Op::GetParameter, true);
        let start = Instant::now();
        let err = b.get("/app/name").await.unwrap_err();
        assert!(matches!(err, BackendError::AccessDenied(_)), "{err:?}");
        assert_eq!(b.api_calls().get(Op::GetParameter), 1);
        assert_eq!(start.elapsed(), Duration::ZERO, "no back-off either");
        // Faults are per operation: listings still answer.
        assert!(b.list("/app", true, None).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_outage_stops_retrying_at_the_call_deadline() {
        let b = faulty(0);
        b.outage(Op::GetParameter, true);
        b.latency(Op::GetParameter, Some(Duration::from_secs(5)));
        let start = Instant::now();
        assert!(b.get("/app/name").await.is_err());
        // Attempts end at 5 s and about 10 s; the third starts before 12 s and ends past it,
        // and no fourth starts.
        assert_eq!(b.api_calls().get(Op::GetParameter), 3);
        let took = start.elapsed();
        assert!(
            took > CALL_DEADLINE && took < CALL_DEADLINE + Duration::from_secs(4),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_under_throttling_keep_to_the_pace() {
        // 4 calls a second, its burst spent: every attempt, retries included, waits its slot.
        let b = faulty(4);
        for _ in 0..4 * crate::backend::BURST_SECONDS {
            b.api_calls().start(Op::GetParametersByPath).await;
        }
        b.throttle(Op::GetParameter, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(b.get("/app/name").await.unwrap().is_some());
        }
        let calls = b.api_calls();
        assert_eq!(
            calls.get(Op::GetParameter),
            6,
            "three throttled attempts, three answers"
        );
        assert_eq!(calls.throttles(), 3);
        // Six attempts at 4 a second: at least 1.25 s.
        assert!(
            start.elapsed() >= Duration::from_millis(1250),
            "{:?}",
            start.elapsed()
        );
    }
}
