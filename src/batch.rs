//! Natural batching: values asked for by name at the same time go to AWS together, in calls of
//! up to [`Backend::batch_size`] names (SSM's `GetParameters` takes 10).
//!
//! A name waits for no timer. Its asker queues it and yields once, so that names asked for in
//! the same instant join it; then, if fewer than [`MAX_SENDING`] calls are in flight, it sends
//! its own name together with the oldest others queued. Otherwise it waits for a call to end,
//! and names that queue up meanwhile leave together in the next call. So a lone name costs
//! one call, as before, and a crowd costs a call per ten names.
//!
//! Promises: a call holds at most one name of each parameter (`/a` and `/a:3` never go
//! together), because an answer names its parameter, not always the selector it was asked by;
//! every queued name is answered, by its own asker's call or by another's; a lone name is
//! asked for with `GetParameter`, so that it costs what it cost before; a batched call denied
//! as a whole is asked again name by name, so that one unreadable name never fails the others,
//! and when names denied together are readable alone (a policy without `ssm:GetParameters`),
//! batching stops for the life of the mount, with one line in the log.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{oneshot, Notify};

use crate::backend::{Backend, BackendError, Param};
use crate::names::SELECTOR;
use crate::sync::Mutex;
use tracing::warn;

/// Calls in flight at once: a crowd waits for one of them to end, then leaves together.
pub const MAX_SENDING: usize = 2;

type Answer = Result<Option<Param>, BackendError>;

struct Asked {
    id: u64,
    name: String,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Asked>,
    sending: usize,
    next_id: u64,
}

#[derive(Default)]
pub struct Batcher {
    state: Mutex<State>,
    /// Rung when a call ends: the askers still queued try again.
    ended: Notify,
    /// Set when batched calls are denied while names alone are not: names go one by one.
    unbatched: AtomicBool,
}

impl Batcher {
    /// The value of `name` (a full name, possibly with a selector), asked for together with the
    /// names asked for at the same time.
    pub async fn get<B: Backend>(&self, backend: &B, name: &str) -> Answer {
        let size = backend.batch_size();
        if size <= 1 || self.unbatched.load(Ordering::Relaxed) {
            return backend.get(name).await;
        }
        let (answer, answered) = oneshot::channel();
        let id = {
            let mut state = self.state.lock().unwrap();
            state.next_id += 1;
            let id = state.next_id;
            state.queue.push_back(Asked {
                id,
                name: name.to_string(),
                answer,
            });
            id
        };
        let mut queued = Queued { batcher: self, id };
        // Names asked for in this same instant join this one.
        tokio::task::yield_now().await;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let next = {
                let mut state = self.state.lock().unwrap();
                if !state.queue.iter().any(|a| a.id == id) {
                    Next::Taken
                } else if state.sending < MAX_SENDING {
                    state.sending += 1;
                    Next::Send(take(&mut state.queue, id, size))
                } else {
                    Next::Wait
                }
            };
            match next {
                Next::Wait => ended.await,
                Next::Send(batch) => {
                    queued.id = 0;
                    let _sending = Sending(self);
                    self.send(backend, batch).await;
                    break;
                }
                Next::Taken => {
                    queued.id = 0;
                    break;
                }
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(BackendError::Unavailable(
                "the call that carried this name was abandoned".to_string(),
            ))
        })
    }
}

/// What an asker does next.
enum Next {
    /// Send this batch, which holds its own name.
    Send(Vec<Asked>),
    /// Another asker took its name along: wait for the answer.
    Taken,
    /// Enough calls are in flight: wait for one to end.
    Wait,
}

/// Takes the batch that holds the name `id`: it, then the oldest queued names of other
/// parameters, up to `size` names.
fn take(queue: &mut VecDeque<Asked>, id: u64, size: usize) -> Vec<Asked> {
    let mut bases = HashSet::new();
    let mut batch = Vec::new();
    let mine = queue.iter().position(|a| a.id == id).expect("queued");
    let mine = queue.remove(mine).expect("queued");
    bases.insert(base(&mine.name).to_string());
    batch.push(mine);
    let mut i = 0;
    while i < queue.len() && batch.len() < size {
        if bases.insert(base(&queue[i].name).to_string()) {
            batch.push(queue.remove(i).expect("in range"));
        } else {
            i += 1;
        }
    }
    batch
}

fn base(name: &str) -> &str {
    name.split_once(SELECTOR).map_or(name, |(base, _)| base)
}

impl Batcher {
    /// Asks AWS for a batch and answers each of its askers.
    async fn send<B: Backend>(&self, backend: &B, batch: Vec<Asked>) {
        if let [_] = batch.as_slice() {
            let asked = batch.into_iter().next().expect("one");
            let _ = asked.answer.send(backend.get(&asked.name).await);
            return;
        }
        let names: Vec<String> = batch.iter().map(|a| a.name.clone()).collect();
        match backend.get_many(&names).await {
            Ok(found) => {
                for (asked, found) in batch.into_iter().zip(found) {
                    let _ = asked.answer.send(Ok(found));
                }
            }
            Err(err) if !err.is_transient() => {
                // Denied as a whole (one name the caller may not read denies the call, and so
                // does a policy without the batched action): each name is asked for alone, and
                // fails or succeeds on its own.
                let mut readable = false;
                for asked in batch {
                    let found = backend.get(&asked.name).await;
                    readable |= found.is_ok();
                    let _ = asked.answer.send(found);
                }
                if readable && !self.unbatched.swap(true, Ordering::Relaxed) {
                    warn!(error = %err, "names asked for together are refused, but not alone: \
                        fetching names one by one from now on (allow ssm:GetParameters to batch them)");
                }
            }
            Err(err) => {
                for asked in batch {
                    let _ = asked.answer.send(Err(err.clone()));
                }
            }
        }
    }
}

/// A name still in the queue while its asker waits: taken out if the asker goes away.
struct Queued<'a> {
    batcher: &'a Batcher,
    /// 0 once the name has left the queue.
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.id != 0 {
            let mut state = self.batcher.state.lock().unwrap();
            state.queue.retain(|a| a.id != self.id);
        }
    }
}

/// A call in flight: counted until it ends, however it ends, and then the queue is told.
struct Sending<'a>(&'a Batcher);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().sending -= 1;
        self.0.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::faulty::FaultyBackend;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{ApiCalls, Op};
    use crate::content::ParamType::String as Str;

    /// Parameters `/p/0` … `/p/{n-1}`, each with versions 1 and 2 (`v1`, `v2`) and the label
    /// `prod` on version 1.
    fn params(n: usize) -> Arc<MemoryBackend> {
        let b = MemoryBackend::new();
        for i in 0..n {
            let name = format!("/p/{i}");
            b.put(&name, Str, "v1");
            b.put(&name, Str, "v2");
            b.label(&name, 1, "prod");
        }
        Arc::new(b)
    }

    /// Asks for every name at once, each in a task of its own, and gives the values read.
    async fn crowd<B: Backend>(b: &Arc<B>, batcher: &Arc<Batcher>, names: &[&str]) -> Vec<String> {
        let tasks: Vec<_> = names
            .iter()
            .map(|name| {
                let (b, batcher, name) = (b.clone(), batcher.clone(), name.to_string());
                tokio::spawn(async move { batcher.get(&*b, &name).await })
            })
            .collect();
        let mut values = Vec::new();
        for task in tasks {
            let found = task.await.unwrap().unwrap();
            values.push(found.map_or("-".to_string(), |p| {
                String::from_utf8(p.content.as_bytes().to_vec()).unwrap()
            }));
        }
        values
    }

    #[tokio::test]
    async fn a_lone_name_is_one_get_parameter() {
        let b = params(1);
        let batcher = Arc::new(Batcher::default());
        assert_eq!(crowd(&b, &batcher, &["/p/0:1"]).await, ["v1"]);
        assert_eq!(
            (b.calls(Op::GetParameter), b.calls(Op::GetParameters)),
            (1, 0)
        );
    }

    #[tokio::test]
    async fn names_asked_together_go_in_calls_of_ten() {
        let b = params(25);
        let batcher = Arc::new(Batcher::default());
        let names: Vec<String> = (0..25)
            .map(|i| match i % 3 {
                0 => format!("/p/{i}:1"),
                1 => format!("/p/{i}:prod"),
                _ => format!("/p/{i}"),
            })
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let values = crowd(&b, &batcher, &names).await;
        let expected: Vec<&str> = (0..25)
            .map(|i| if i % 3 == 2 { "v2" } else { "v1" })
            .collect();
        assert_eq!(values, expected);
        assert_eq!(
            (b.calls(Op::GetParameter), b.calls(Op::GetParameters)),
            (0, 3)
        );
    }

    #[tokio::test]
    async fn a_call_holds_one_version_of_a_parameter_at_most() {
        let b = params(2);
        let batcher = Arc::new(Batcher::default());
        let values = crowd(
            &b,
            &batcher,
            &["/p/0:1", "/p/0:2", "/p/1:prod", "/p/0", "/p/9:1"],
        )
        .await;
        assert_eq!(values, ["v1", "v2", "v1", "v2", "-"]);
        // /p/0:1, /p/1:prod and /p/9:1 together; then /p/0:2 and /p/0 one by one.
        assert_eq!(
            (b.calls(Op::GetParametersByPath), b.calls(Op::GetParameters)),
            (0, 1)
        );
        assert_eq!(b.calls(Op::GetParameter), 2);
    }

    #[tokio::test]
    async fn names_asked_while_calls_are_in_flight_leave_together() {
        let b = params(12);
        let batcher = Arc::new(Batcher::default());
        let gate = b.hold_calls();
        // Two names asked one after the other: two calls, both held.
        let mut alone = Vec::new();
        for (n, name) in ["/p/10:1", "/p/11:1"].into_iter().enumerate() {
            let (b2, batcher) = (b.clone(), batcher.clone());
            alone.push(tokio::spawn(
                async move { crowd(&b2, &batcher, &[name]).await },
            ));
            while b.calls(Op::GetParameter) < n as u64 + 1 {
                tokio::task::yield_now().await;
            }
        }
        // Both calls are held: the next ten names queue.
        let names: Vec<String> = (0..10).map(|i| format!("/p/{i}:2")).collect();
        let rest = {
            let (b, batcher) = (b.clone(), batcher.clone());
            tokio::spawn(async move {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                crowd(&b, &batcher, &names).await
            })
        };
        while batcher.state.lock().unwrap().queue.len() < 10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        for task in alone {
            assert_eq!(task.await.unwrap(), ["v1"]);
        }
        assert_eq!(rest.await.unwrap(), ["v2"; 10]);
        assert_eq!(
            (b.calls(Op::GetParameter), b.calls(Op::GetParameters)),
            (2, 1)
        );
    }

    #[tokio::test]
    async fn a_call_denied_as_a_whole_is_asked_again_name_by_name() {
        let b = Arc::new(FaultyBackend::new(
            MemoryBackend::clone(&params(3)),
            Arc::new(ApiCalls::paced(0)),
        ));
        b.deny(Op::GetParameters, true);
        let batcher = Arc::new(Batcher::default());
        let values = crowd(&b, &batcher, &["/p/0:1", "/p/1:2", "/p/2:prod"]).await;
        assert_eq!(values, ["v1", "v2", "v1"]);
        let calls = b.api_calls();
        assert_eq!(
            (calls.get(Op::GetParameters), calls.get(Op::GetParameter)),
            (1, 3)
        );
        // Readable alone, refused together (a policy without ssm:GetParameters): batching
        // stops, and no more calls are refused.
        let values = crowd(&b, &batcher, &["/p/0:2", "/p/1:1"]).await;
        assert_eq!(values, ["v2", "v1"]);
        assert_eq!(
            (calls.get(Op::GetParameters), calls.get(Op::GetParameter)),
            (1, 5)
        );
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_name_it_carried() {
        let b = params(3);
        let batcher = Arc::new(Batcher::default());
        b.fail_with(Some(BackendError::Unavailable("down".to_string())));
        let tasks: Vec<_> = ["/p/0:1", "/p/1:1"]
            .into_iter()
            .map(|name| {
                let (b, batcher) = (b.clone(), batcher.clone());
                tokio::spawn(async move { batcher.get(&*b, name).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().unwrap_err().is_transient());
        }
        assert_eq!(b.calls(Op::GetParameters), 1);
    }
}
