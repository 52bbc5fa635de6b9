//! Single-flight: concurrent requests that need the same fetch share one call to AWS.
//!
//! Promises: while a fetch for a key is running, every other caller for that key waits for its
//! result instead of starting another; a caller that needs data newer than a running fetch (a
//! forced refresh) waits for it to end and then starts its own.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

type Outcome<E> = Option<Result<(), E>>;
/// A running fetch: when it started, and where its outcome will appear.
type Running<E> = (Instant, watch::Receiver<Outcome<E>>);

pub struct Flights<K, E> {
    running: Mutex<HashMap<K, Running<E>>>,
}

impl<K: Clone + Eq + Hash, E: Clone> Default for Flights<K, E> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Clone + Eq + Hash, E: Clone> Flights<K, E> {
    /// Runs `work` for `key` unless a fetch for it that started at or after `not_before` is
    /// already running, in which case its result is shared. `not_before: None` joins any.
    /// Returns when the fetch whose result was used started.
    pub async fn run<F>(&self, key: K, not_before: Option<Instant>, work: F) -> Result<Instant, E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        let mut work = Some(work);
        loop {
            let (tx, mut rx) = {
                let mut running = self.running.lock().unwrap();
                match running.get(&key) {
                    Some((started, rx)) => (None, (*started, rx.clone())),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        let started = Instant::now();
                        running.insert(key.clone(), (started, rx.clone()));
                        (Some(tx), (started, rx))
                    }
                }
            };
            let Some(tx) = tx else {
                let (started, ref mut rx) = rx;
                let joinable = not_before.is_none_or(|t| started >= t);
                let outcome = rx.wait_for(Option::is_some).await.map(|o| o.clone());
                match outcome {
                    Ok(Some(result)) if joinable => return result.map(|()| started),
                    // The leader ended (or was dropped) without a result we may use: go again.
                    _ => continue,
                }
            };
            // Drop guard: if this future is dropped mid-fetch, followers must not wait forever.
            let guard = Leader {
                flights: self,
                key: &key,
            };
            let result = work.take().expect("work runs once").await;
            drop(guard);
            let _ = tx.send(Some(result.clone()));
            return result.map(|()| rx.0);
        }
    }
}

struct Leader<'a, K: Clone + Eq + Hash, E> {
    flights: &'a Flights<K, E>,
    key: &'a K,
}

impl<K: Clone + Eq + Hash, E> Drop for Leader<'_, K, E> {
    fn drop(&mut self) {
        self.flights.running.lock().unwrap().remove(self.key);
    }
}
