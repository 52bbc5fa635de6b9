//! Single-flight: concurrent requests that need the same fetch share one call to AWS.
//!
//! Promises: while a fetch for a key is running, every other caller for that key waits for its
//! result instead of starting another; a caller that needs data newer than a running fetch (a
//! forced refresh) waits for it to end and then starts its own; a caller that decided to fetch
//! from what it saw before a fetch of that key ended (it read [`Flights::endings`] first) gets
//! that fetch's result and makes no call, so a crowd that planned together fetches once.

use crate::capped::Capped;
use crate::sync::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use tokio::time::Instant;

use tokio::sync::watch;

type Outcome<E> = Option<Result<(), E>>;
/// A running fetch: when it started, and where its outcome will appear.
type Running<E> = (Instant, watch::Receiver<Outcome<E>>);

/// Good fetches remembered as ended, at most: a caller whose key was forgotten fetches again.
const MAX_DONE: usize = 4096;

struct State<K: Hash + Eq, E> {
    running: HashMap<K, Running<E>>,
    /// How many good fetches have ended, in all.
    endings: u64,
    /// The last good fetch of each key: the value of `endings` it made, and when it started.
    done: Capped<K, (u64, Instant)>,
}

pub struct Flights<K: Hash + Eq, E> {
    state: Mutex<State<K, E>>,
}

impl<K: Clone + Eq + Hash, E: Clone> Default for Flights<K, E> {
    fn default() -> Self {
        Flights {
            state: Mutex::new(State {
                running: HashMap::new(),
                endings: 0,
                done: Capped::new(MAX_DONE),
            }),
        }
    }
}

impl<K: Clone + Eq + Hash, E: Clone> Flights<K, E> {
    /// How many good fetches have ended so far: read it before deciding to fetch, and pass it
    /// to [`Flights::run`].
    pub fn endings(&self) -> u64 {
        self.state.lock().unwrap().endings
    }

    /// Runs `work` for `key` unless a fetch for it that started at or after `not_before` is
    /// already running, in which case its result is shared (`not_before: None` joins any), or
    /// a good fetch of `key` ended after the caller read `seen` from [`Flights::endings`].
    /// Returns when the fetch whose result was used started.
    pub async fn run<F>(
        &self,
        key: K,
        not_before: Option<Instant>,
        seen: Option<u64>,
        work: F,
    ) -> Result<Instant, E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        let mut work = Some(work);
        loop {
            let (tx, mut rx) = {
                let mut state = self.state.lock().unwrap();
                if let (Some(seen), Some((ended, started))) = (seen, state.done.peek(&key)) {
                    if *ended > seen && not_before.is_none_or(|t| *started >= t) {
                        return Ok(*started);
                    }
                }
                let running = &mut state.running;
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
            if result.is_ok() {
                // Recorded before the fetch stops running, so that a caller sees one or the other.
                let mut state = self.state.lock().unwrap();
                state.endings += 1;
                let ended = state.endings;
                state.done.put(key.clone(), (ended, rx.0));
            }
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
        self.flights.state.lock().unwrap().running.remove(self.key);
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;

    /// A fetch that runs until released, counting its runs.
    fn held_work(
        runs: &Arc<AtomicUsize>,
        release: &Arc<Notify>,
        result: Result<(), String>,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let (runs, release) = (runs.clone(), release.clone());
        async move {
            runs.fetch_add(1, SeqCst);
            release.notified().await;
            result
        }
    }

    #[tokio::test]
    async fn callers_during_a_fetch_share_it_and_its_error() {
        let flights = Arc::new(Flights::<&str, String>::default());
        let (runs, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let (flights, work) = (
                    flights.clone(),
                    held_work(&runs, &release, Err("no".into())),
                );
                tokio::spawn(async move { flights.run("k", None, None, work).await })
            })
            .collect();
        while runs.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        for c in callers {
            assert_eq!(c.await.unwrap(), Err("no".to_string()));
        }
        assert_eq!(runs.load(SeqCst), 1, "one fetch for five callers");
    }

    #[tokio::test]
    async fn a_caller_that_needs_newer_data_waits_and_fetches_again() {
        let flights = Arc::new(Flights::<&str, String>::default());
        let (runs, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let first = {
            let (flights, work) = (flights.clone(), held_work(&runs, &release, Ok(())));
            tokio::spawn(async move { flights.run("k", None, None, work).await })
        };
        while runs.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let asked = Instant::now();
        let forced = {
            let (flights, work) = (flights.clone(), held_work(&runs, &release, Ok(())));
            tokio::spawn(async move { flights.run("k", Some(asked), None, work).await })
        };
        release.notify_one();
        let first_started = first.await.unwrap().unwrap();
        while runs.load(SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let forced_started = forced.await.unwrap().unwrap();
        assert!(first_started < asked && forced_started >= asked);
        assert_eq!(runs.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn a_leader_dropped_mid_fetch_does_not_strand_its_followers() {
        let flights = Arc::new(Flights::<&str, String>::default());
        let (runs, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = {
            let (flights, work) = (flights.clone(), held_work(&runs, &release, Ok(())));
            tokio::spawn(async move { flights.run("k", None, None, work).await })
        };
        while runs.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let follower = {
            let (flights, work) = (flights.clone(), held_work(&runs, &release, Ok(())));
            tokio::spawn(async move { flights.run("k", None, None, work).await })
        };
        tokio::task::yield_now().await;
        leader.abort();
        while runs.load(SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert!(
            follower.await.unwrap().is_ok(),
            "the follower ran it itself"
        );
    }
}

#[cfg(all(test, feature = "shuttle"))]
mod shuttle_tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    use super::*;

    /// Whatever the interleaving: at most one fetch per key runs at a time, every caller gets
    /// an answer, and a caller that asked for data newer than an instant gets a fetch that
    /// started at or after it.
    #[test]
    fn shuttle_flights_share_without_overlap() {
        shuttle::check_random(
            || {
                let flights = Arc::new(Flights::<u8, ()>::default());
                let running = Arc::new(AtomicUsize::new(0));
                let callers: Vec<_> = (0..3)
                    .map(|i| {
                        let (flights, running) = (flights.clone(), running.clone());
                        shuttle::future::spawn(async move {
                            let asked = Instant::now();
                            let not_before = (i == 2).then_some(asked);
                            let work = async {
                                assert_eq!(running.fetch_add(1, SeqCst), 0, "two fetches at once");
                                shuttle::future::yield_now().await;
                                running.fetch_sub(1, SeqCst);
                                Ok(())
                            };
                            let started = flights.run(0, not_before, None, work).await.unwrap();
                            if not_before.is_some() {
                                assert!(started >= asked);
                            }
                        })
                    })
                    .collect();
                shuttle::future::block_on(async {
                    for c in callers {
                        c.await.unwrap();
                    }
                });
            },
            2000,
        );
    }
}
