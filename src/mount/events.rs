//! Change events from an SQS queue (`--events-queue`, or the queue `--events-topic` makes):
//! long-polls the queue (20 s waits, ten messages a receive), reads each message
//! ([`crate::events`]) and has the core fetch what changed ([`crate::fs::Fs::apply_changes`]).
//!
//! Promises:
//! - a message is deleted only once its change is applied, or is known to be of no concern
//!   (not an event, another service, a name outside the source) or to fail for good (a name
//!   AWS refuses: a read would meet the same refusal); a message that is not an event is logged
//!   at debug, counted and deleted, and never stops the loop;
//! - a change that fails for now (AWS down, throttling) is kept, with its message, and applied
//!   again with back-off; the others of its batch go on;
//! - with `--events-delay D`, the names of a batch are fetched together at a random instant in
//!   [0, D] after the batch's first event, so that a fleet's hosts spread their calls and share
//!   them between the changes of that window; the messages stay invisible to other receives
//!   until then (their visibility timeout covers the delay); a message received again is one
//!   change, not two;
//! - while receives succeed, events flow and what was fetched since they began stays fresh for
//!   `--events-max-age`; when a receive fails, that is logged once, the mount's max ages apply
//!   again at once, and the queue is tried again with back-off; when receives work again, that
//!   is logged too. A queue that cannot be made yet (`--events-topic`) is made in the
//!   background the same way, while the mount serves at its max age.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;

use super::cli::Cli;
use super::queue;
use crate::backend::Backend;
use crate::events::{parse, Event};
use crate::fs::Fs;
use crate::stats::Stats;

/// SQS's longest long poll.
const LONGEST_WAIT: Duration = Duration::from_secs(20);
/// How long one SQS call may take: the longest poll, and time to answer.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most messages one receive returns.
const BATCH: i32 = 10;
/// How long received messages stay invisible beyond the delay: time to apply them.
const APPLY_TIME: Duration = Duration::from_secs(60);
/// The longest `--events-delay`: SQS hides a message for 12 hours at most.
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 3600 - 60);
/// Back-off between failed receives, and between failed applies.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a new subscription's queue policy may take to apply: events sent meanwhile may
/// be lost, so what was fetched before then is not trusted for longer than the max age.
const POLICY_DELAY: Duration = Duration::from_secs(60);

/// How long a clean stop waits to remove the queue made for --events-topic.
const TEARDOWN: Duration = Duration::from_secs(5);

/// Change events as a mount runs them: the task that receives them, and the queue made for
/// `--events-topic`, which a clean stop removes.
pub struct Running {
    task: tokio::task::JoinHandle<()>,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    made: Arc<Mutex<Option<queue::Made>>>,
}

/// Starts receiving change events, if the command line asks for them.
pub fn start<B: Backend>(
    cli: &Cli,
    sdk: &SdkConfig,
    fs: &Arc<Fs<B>>,
    rt: &tokio::runtime::Handle,
) -> Option<Running> {
    if cli.events_queue.is_none() && cli.events_topic.is_none() {
        return None;
    }
    // A receive waits up to 20 s for messages: its attempts may take that long and more.
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(super::CONNECT_TIMEOUT)
                    .operation_attempt_timeout(RECEIVE_TIMEOUT)
                    .build(),
            )
            .build(),
    );
    let sns = aws_sdk_sns::Client::new(sdk);
    let made = Arc::new(Mutex::new(None));
    let queue = match (&cli.events_queue, &cli.events_topic) {
        (Some(url), _) => Queue::Url(url.clone()),
        (None, Some(topic)) => {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "host".to_string());
            let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
            let mountpoint = std::path::absolute(&cli.mountpoint).unwrap_or(cli.mountpoint.clone());
            let name = queue::queue_name(
                &host,
                machine.trim(),
                &mountpoint.to_string_lossy(),
                &cli.source.to_string(),
            );
            Queue::Topic {
                sns: sns.clone(),
                topic: topic.clone(),
                name,
                made: made.clone(),
            }
        }
        (None, None) => unreachable!("checked above"),
    };
    let delay = Duration::from_secs(cli.events_delay);
    let task = rt.spawn(run(fs.clone(), sqs.clone(), queue, delay));
    Some(Running {
        task,
        sqs,
        sns,
        made,
    })
}

impl Running {
    /// Stops receiving, then removes the queue made for `--events-topic` (a clean stop).
    pub async fn stop(self) {
        self.task.abort();
        let made = self.made.lock().unwrap().take();
        if let Some(made) = made {
            let _ = tokio::time::timeout(TEARDOWN, made.remove(&self.sqs, &self.sns)).await;
        }
    }
}

/// Where the events come from.
pub enum Queue {
    /// A queue given by its URL (`--events-queue`).
    Url(String),
    /// A queue of the host's own, subscribed to a topic (`--events-topic`). Once made, it is
    /// kept in `made`, for the clean stop to remove.
    Topic {
        sns: aws_sdk_sns::Client,
        topic: String,
        name: String,
        made: Arc<Mutex<Option<queue::Made>>>,
    },
}

/// One change received and not yet applied: its path, whether labels moved, and the receipt
/// of its latest delivery.
struct Item {
    path: String,
    labels: bool,
    receipt: String,
}

/// Changes received and not yet applied, by message id (a message received again replaces
/// its earlier delivery), and when they are due.
#[derive(Default)]
struct Pending {
    items: HashMap<String, Item>,
    due: Option<Instant>,
    /// Back-off of failed applies.
    backoff: Duration,
}

/// Receives and applies change events until the task is stopped.
pub async fn run<B: Backend>(
    fs: Arc<Fs<B>>,
    client: aws_sdk_sqs::Client,
    source: Queue,
    delay: Duration,
) {
    let stats = fs.stats().clone();
    let delay = delay.min(MAX_DELAY);
    let mut pending = Pending::default();
    let mut backoff = Duration::ZERO;
    let mut reported = false;
    // When events may be trusted from (a new subscription needs time to apply).
    let mut trusted_from = Instant::now();
    let mut url = match &source {
        Queue::Url(url) => Some(url.clone()),
        Queue::Topic { .. } => None,
    };
    loop {
        let queue_url = match &url {
            Some(url) => url.clone(),
            None => {
                let Queue::Topic {
                    sns,
                    topic,
                    name,
                    made,
                } = &source
                else {
                    unreachable!("a given queue has its URL")
                };
                match queue::make(&client, sns, topic, name).await {
                    Ok(m) => {
                        trusted_from = Instant::now() + POLICY_DELAY;
                        let u = m.url.clone();
                        *made.lock().unwrap() = Some(m);
                        url = Some(u.clone());
                        u
                    }
                    Err(err) => {
                        if !reported {
                            warn!("change events: {err}; values follow --max-age until the queue can be made");
                            reported = true;
                        }
                        backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
        };
        let mut now = Instant::now();
        if let Some(due) = pending
            .due
            .filter(|due| *due > now && *due < now + MIN_BACKOFF)
        {
            // Due within a second (a receive waits whole seconds): wait here, then take what
            // came meanwhile with a receive that answers at once, and apply it all together.
            tokio::time::sleep_until(due).await;
            now = Instant::now();
        }
        {
            // Until a receive has worked, one that answers at once tells whether the queue can
            // be read; then each waits for messages, up to when the pending changes are due.
            let wait = if fs.events().flowing() {
                pending
                    .due
                    .map_or(LONGEST_WAIT, |due| due.saturating_duration_since(now))
                    .min(LONGEST_WAIT)
            } else {
                Duration::ZERO
            };
            let received = client
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(BATCH)
                .wait_time_seconds(wait.as_secs() as i32)
                .visibility_timeout((delay + APPLY_TIME).as_secs() as i32)
                .send()
                .await;
            match received {
                Err(err) => {
                    let stopped = fs.events().set_flowing(false, Instant::now());
                    if stopped || !reported {
                        warn!(
                            queue = queue_url,
                            error = %describe(&err),
                            "change events: cannot receive; values follow --max-age until they flow again"
                        );
                        reported = true;
                    }
                    backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    let pause = pending.due.map_or(backoff, |due| {
                        due.saturating_duration_since(Instant::now()).min(backoff)
                    });
                    tokio::time::sleep(pause).await;
                }
                Ok(out) => {
                    backoff = Duration::ZERO;
                    stats.events_received_now();
                    if fs.events().set_flowing(true, trusted_from.max(now)) {
                        info!(
                            queue = queue_url,
                            "change events flow: values stay fresh up to --events-max-age"
                        );
                        reported = false;
                    }
                    let done = take(
                        &fs,
                        &stats,
                        &mut pending,
                        delay,
                        out.messages.unwrap_or_default(),
                    );
                    delete(&client, &queue_url, done).await;
                }
            }
        }
        if pending.due.is_some_and(|due| due <= Instant::now()) {
            let done = apply(&fs, &stats, &mut pending).await;
            delete(&client, &queue_url, done).await;
        }
    }
}

/// Reads received messages: changes join the pending batch; the receipts of the rest are
/// returned, to delete.
fn take<B: Backend>(
    fs: &Fs<B>,
    stats: &Stats,
    pending: &mut Pending,
    delay: Duration,
    messages: Vec<aws_sdk_sqs::types::Message>,
) -> Vec<String> {
    let mut done = Vec::new();
    for message in messages {
        Stats::bump(&stats.events_received);
        let Some(receipt) = message.receipt_handle else {
            continue;
        };
        let id = message.message_id.unwrap_or_else(|| receipt.clone());
        match message.body.as_deref().map(parse) {
            Some(Ok(Event::Changed {
                dialect,
                name,
                labels,
            })) => match fs.event_path(dialect, &name) {
                Some(path) => {
                    pending.items.insert(
                        id,
                        Item {
                            path,
                            labels,
                            receipt,
                        },
                    );
                    pending
                        .due
                        .get_or_insert_with(|| Instant::now() + delay.mul_f64(fastrand::f64()));
                }
                None => {
                    Stats::bump(&stats.events_ignored);
                    done.push(receipt);
                }
            },
            Some(Ok(Event::Other)) => {
                Stats::bump(&stats.events_ignored);
                done.push(receipt);
            }
            Some(Err(why)) => {
                debug!(
                    why = why.0,
                    "change events: a message that is not an event; deleted"
                );
                Stats::bump(&stats.events_unparseable);
                done.push(receipt);
            }
            None => {
                debug!("change events: a message without a body; deleted");
                Stats::bump(&stats.events_unparseable);
                done.push(receipt);
            }
        }
    }
    done
}

/// Applies the pending changes; returns the receipts of those done with. What failed for now
/// stays, due again after a back-off.
async fn apply<B: Backend>(fs: &Fs<B>, stats: &Stats, pending: &mut Pending) -> Vec<String> {
    let mut paths: Vec<(String, bool)> = Vec::new();
    for item in pending.items.values() {
        if !paths
            .iter()
            .any(|(p, l)| *p == item.path && *l == item.labels)
        {
            paths.push((item.path.clone(), item.labels));
        }
    }
    let results = fs.apply_changes(&paths).await;
    let mut kept = false;
    let mut failed_for_now = std::collections::HashSet::new();
    for ((path, labels), result) in paths.iter().zip(&results) {
        match result {
            Ok(()) => Stats::bump(&stats.events_applied),
            Err(err) if err.is_transient() => {
                failed_for_now.insert((path.clone(), *labels));
            }
            Err(err) => {
                debug!(path, error = %err, "change events: AWS refuses this name; its event is done");
                Stats::bump(&stats.events_applied);
            }
        }
    }
    let mut done = Vec::new();
    pending.items.retain(|_, item| {
        let keep = failed_for_now.contains(&(item.path.clone(), item.labels));
        if !keep {
            done.push(item.receipt.clone());
        }
        kept |= keep;
        keep
    });
    if kept {
        pending.backoff = (pending.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        pending.due = Some(Instant::now() + pending.backoff);
    } else {
        pending.backoff = Duration::ZERO;
        pending.due = None;
    }
    done
}

/// Deletes messages by their receipts, ten a call. A failed deletion only means the message
/// comes back and is applied again.
async fn delete(client: &aws_sdk_sqs::Client, queue: &str, receipts: Vec<String>) {
    for chunk in receipts.chunks(BATCH as usize) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .ok()
            })
            .collect();
        let result = client
            .delete_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await;
        if let Err(err) = result {
            debug!(error = %describe(&err), "change events: deleting messages failed; they come back");
        }
    }
}

/// An SQS error as AWS's code and message (never a message body).
pub fn describe<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or_default()
        ),
        None => aws_sdk_sqs::error::DisplayErrorContext(err).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::BackendError;
    use crate::content::ParamType;
    use crate::fs::Config;

    fn item(path: &str, receipt: &str) -> Item {
        Item {
            path: path.to_string(),
            labels: false,
            receipt: receipt.to_string(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_that_fail_for_now_are_kept_and_the_others_are_done() {
        let b = MemoryBackend::new();
        b.put("/app/a", ParamType::String, "1");
        let config = Config {
            source: "/app".parse().unwrap(),
            max_age: Duration::from_secs(60),
            max_age_for: Vec::new(),
            recursive: true,
            max_stale: None,
            secret_mode: 0o400,
            uid: 0,
            gid: 0,
            events: Default::default(),
        };
        let fs = Fs::new(b.clone(), config);
        fs.check_source().await.unwrap();
        let stats = fs.stats().clone();
        let mut pending = Pending::default();
        pending.items.insert("m1".into(), item("a", "r1"));
        pending.items.insert("m2".into(), item("a", "r2"));
        pending.due = Some(Instant::now());
        b.fail_with(Some(BackendError::Unavailable("down".into())));
        let done = apply(&fs, &stats, &mut pending).await;
        assert!(done.is_empty(), "nothing deleted while AWS fails");
        assert_eq!(pending.items.len(), 2);
        let due = pending.due.expect("due again");
        assert!(due > Instant::now(), "after a back-off");
        b.fail_with(None);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let mut done = apply(&fs, &stats, &mut pending).await;
        done.sort();
        assert_eq!(done, ["r1", "r2"], "one change, both deliveries deleted");
        assert!(pending.items.is_empty() && pending.due.is_none());
        // A name AWS refuses for good is done with: a read would meet the same refusal.
        pending.items.insert("m3".into(), item("a", "r3"));
        pending.due = Some(Instant::now());
        b.fail_with(Some(BackendError::AccessDenied(
            "AccessDeniedException".into(),
        )));
        assert_eq!(apply(&fs, &stats, &mut pending).await, ["r3"]);
    }
}
