//! An in-memory [`Backend`]: a sorted map of parameters that answers like SSM (pages of 10,
//! recursive or one level), counts every call by operation, and can fail or hold calls on demand.
//! Unit tests prove caching with its call counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;

use super::ssm::ssm_param;
use super::{ApiCalls, Backend, BackendError, Op, Page, Param};
use crate::content::{Content, ParamType};

const PAGE_SIZE: usize = 10;

#[derive(Clone)]
struct Stored {
    kind: ParamType,
    value: String,
    version: i64,
    modified: SystemTime,
}

#[derive(Default)]
struct Inner {
    params: BTreeMap<String, Stored>,
    /// Every version ever written, by name (SSM keeps up to 100).
    history: HashMap<String, Vec<Stored>>,
    /// (name, label) → version.
    labels: HashMap<(String, String), i64>,
    fail_with: Option<BackendError>,
}

/// See the module documentation. Cloning shares the store.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Mutex<Inner>>,
    calls: Arc<ApiCalls>,
    /// When set, every call waits for a permit first (tests release them one by one).
    gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
    /// Plays a backend whose `get` cannot answer for every listed name.
    lists_only: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or overwrites a parameter; each write makes a new version, as in SSM.
    pub fn put(&self, name: &str, kind: ParamType, value: &str) {
        let mut inner = self.inner.lock().unwrap();
        let version = inner.history.get(name).map_or(1, |h| h.len() as i64 + 1);
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + version as u64);
        let stored = Stored {
            kind,
            value: value.to_string(),
            version,
            modified,
        };
        inner
            .history
            .entry(name.to_string())
            .or_default()
            .push(stored.clone());
        inner.params.insert(name.to_string(), stored);
    }

    /// Puts (or moves) a label on a version, as LabelParameterVersion does.
    pub fn label(&self, name: &str, version: i64, label: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .labels
            .insert((name.to_string(), label.to_string()), version);
    }

    pub fn delete(&self, name: &str) {
        self.inner.lock().unwrap().params.remove(name);
    }

    /// Calls made so far of one operation.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls.get(op)
    }

    /// Calls made so far of every operation.
    pub fn total_calls(&self) -> u64 {
        self.calls.total()
    }

    /// Makes the backend say that only listings answer for every name (as a filtered one does).
    pub fn set_lists_only(&self, yes: bool) {
        self.lists_only
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every call fail with `err` until `None` is set.
    pub fn fail_with(&self, err: Option<BackendError>) {
        self.inner.lock().unwrap().fail_with = err;
    }

    /// Holds every call until a permit is added to the returned semaphore.
    pub fn hold_calls(&self) -> Arc<Semaphore> {
        let sem = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(sem.clone());
        sem
    }

    async fn enter(&self, op: Op) -> Result<(), BackendError> {
        self.calls.count(op);
        let gate = self.gate.lock().unwrap().clone();
        if let Some(sem) = gate {
            sem.acquire().await.expect("gate closed").forget();
        }
        match &self.inner.lock().unwrap().fail_with {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

/// What GetParameter answers for `name`, which may end in a version or a label.
fn find(inner: &Inner, name: &str) -> Option<Param> {
    let Some((base, selector)) = name.split_once(':') else {
        return inner.params.get(name).map(|s| to_param(name, s));
    };
    if !inner.params.contains_key(base) {
        return None;
    }
    let version = match selector.parse::<i64>() {
        Ok(v) => Some(v),
        Err(_) => inner
            .labels
            .get(&(base.to_string(), selector.to_string()))
            .copied(),
    };
    let history = inner.history.get(base);
    let stored = version.and_then(|v| history?.iter().find(|s| s.version == v));
    stored.map(|s| to_param(base, s))
}

fn to_param(name: &str, s: &Stored) -> Param {
    ssm_param(
        name.to_string(),
        s.kind,
        Content::render(s.kind, s.value.clone()),
        s.version,
        s.modified,
        format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}"),
        "text".to_string(),
    )
}

impl Backend for MemoryBackend {
    fn api_calls(&self) -> Arc<ApiCalls> {
        self.calls.clone()
    }

    fn gets_every_name(&self) -> bool {
        !self.lists_only.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn list(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> Result<Page, BackendError> {
        self.enter(Op::GetParametersByPath).await?;
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let skip: usize = next_token.map_or(0, |t| t.parse().unwrap());
        let inner = self.inner.lock().unwrap();
        let matching: Vec<_> = inner
            .params
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .filter(|(name, _)| recursive || !name[prefix.len()..].contains('/'))
            .collect();
        let params = matching
            .iter()
            .skip(skip)
            .take(PAGE_SIZE)
            .map(|(name, s)| to_param(name, s))
            .collect();
        let next = skip + PAGE_SIZE;
        Ok(Page {
            params,
            next_token: (next < matching.len()).then(|| next.to_string()),
        })
    }

    async fn get(&self, name: &str) -> Result<Option<Param>, BackendError> {
        self.enter(Op::GetParameter).await?;
        Ok(find(&self.inner.lock().unwrap(), name))
    }

    fn batch_size(&self) -> usize {
        10
    }

    async fn get_many(&self, names: &[String]) -> Result<Vec<Option<Param>>, BackendError> {
        assert!(names.len() <= 10, "GetParameters takes at most 10 names");
        self.enter(Op::GetParameters).await?;
        let inner = self.inner.lock().unwrap();
        Ok(names.iter().map(|name| find(&inner, name)).collect())
    }
}
