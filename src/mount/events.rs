//! Change events from an SQS queue (`--events-queue`): long-polls the queue (20 s waits, ten
//! messages a receive), reads each message ([`crate::events`]) and has the core fetch what
//! changed ([`crate::fs::Fs::apply_changes`]).
//!
//! Promises:
//! - a message is deleted only once its change is applied, or known to be of no concern (not
//!   an event, another service, a name outside the source); a message that is not an event is
//!   logged at debug, counted and deleted, and never stops the loop;
//! - with `--events-delay D`, the names of a batch are fetched together at a random instant in
//!   [0, D] after the batch's first event, so that a fleet's hosts spread their calls and share
//!   them between the changes of that window; the messages stay invisible to other receives
//!   until then (their visibility timeout covers the delay);
//! - while receives succeed, events flow and what is held stays fresh for `--events-max-age`;
//!   when a receive fails, that is logged once, the mount's max ages apply again at once, and
//!   the queue is tried again with back-off; when receives work again, that is logged too.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::time::Instant;
use tracing::{debug, info, warn};

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
/// Back-off between failed receives, and between failed applies.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Changes received and not yet applied, with the receipts of their messages.
#[derive(Default)]
struct Pending {
    paths: Vec<(String, bool)>,
    receipts: Vec<String>,
    due: Option<Instant>,
}

/// Receives and applies change events until the runtime ends.
pub async fn run<B: Backend>(
    fs: Arc<Fs<B>>,
    client: aws_sdk_sqs::Client,
    queue: String,
    delay: Duration,
) {
    let stats = fs.stats().clone();
    let mut pending = Pending::default();
    let mut backoff = Duration::ZERO;
    let mut reported = false;
    loop {
        let now = Instant::now();
        // Until a receive has worked, one that answers at once tells whether the queue can be
        // read; then each waits for messages, up to when the pending changes are due.
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
            .queue_url(&queue)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout((delay + APPLY_TIME).as_secs().min(43_200) as i32)
            .send()
            .await;
        match received {
            Err(err) => {
                let stopped = fs.events().set_flowing(false);
                if stopped || !reported {
                    warn!(
                        queue,
                        error = %describe(&err),
                        "change events: cannot receive; values follow --max-age until they flow again"
                    );
                    reported = true;
                }
                backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                let until = pending.due.map_or(backoff, |due| {
                    due.saturating_duration_since(Instant::now()).min(backoff)
                });
                tokio::time::sleep(until).await;
            }
            Ok(out) => {
                backoff = Duration::ZERO;
                stats.events_received_now();
                if fs.events().set_flowing(true) {
                    info!(
                        queue,
                        "change events flow: values stay fresh up to --events-max-age"
                    );
                    reported = false;
                }
                let mut done = Vec::new();
                for message in out.messages.unwrap_or_default() {
                    Stats::bump(&stats.events_received);
                    let Some(receipt) = message.receipt_handle else {
                        continue;
                    };
                    let event = message.body.as_deref().map(parse);
                    match event {
                        Some(Ok(Event::Changed {
                            dialect,
                            name,
                            labels,
                        })) => match fs.event_path(dialect, &name) {
                            Some(path) => {
                                if !pending
                                    .paths
                                    .iter()
                                    .any(|(p, l)| *p == path && *l == labels)
                                {
                                    pending.paths.push((path, labels));
                                }
                                pending.receipts.push(receipt);
                                pending.due.get_or_insert_with(|| {
                                    Instant::now() + delay.mul_f64(fastrand::f64())
                                });
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
                delete(&client, &queue, done).await;
            }
        }
        if pending.due.is_some_and(|due| due <= Instant::now()) {
            match fs.apply_changes(&pending.paths).await {
                Ok(()) => {
                    stats.events_applied.fetch_add(
                        pending.paths.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    let receipts = std::mem::take(&mut pending.receipts);
                    pending = Pending::default();
                    delete(&client, &queue, receipts).await;
                }
                Err(err) => {
                    // Kept: applied again later; the messages stay on the queue meanwhile.
                    debug!(error = %err, "change events: applying failed; trying again");
                    pending.due = Some(Instant::now() + MIN_BACKOFF);
                }
            }
        }
    }
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
fn describe<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> String
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
