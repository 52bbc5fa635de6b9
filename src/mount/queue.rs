//! A queue of this host's own for change events (`--events-topic`): an SNS topic fans events
//! out to every host, and an SQS message goes to one consumer, so each mount needs a queue.
//!
//! Promises:
//! - the queue's name comes from the host (its name and machine id) and the mount (mountpoint
//!   and source), so a restart, even after the daemon was killed, finds and reuses the same
//!   queue and subscription instead of leaving one behind, and two hosts of one name do not
//!   share a queue (each would get half the events);
//! - the queue lets the topic alone send to it (its policy names the topic's ARN), and the
//!   subscription has raw delivery: messages are the events themselves;
//! - on a clean stop the subscription and the queue are removed.

use aws_sdk_sns::error::ProvideErrorMetadata as _;
use aws_sdk_sqs::types::QueueAttributeName;
use tracing::{info, warn};

/// SQS's limit on a queue name.
const MAX_QUEUE_NAME: usize = 80;

/// The queue made for a mount, and its subscription to the topic.
pub struct Made {
    pub url: String,
    subscription: Option<String>,
}

/// The queue name for a mount on a host: `ssmfs-HOST-HASH`, with only the characters SQS
/// allows, and a digest of the machine id, the mountpoint and the source that tells hosts of
/// one name, and a host's mounts, apart.
pub fn queue_name(host: &str, machine: &str, mountpoint: &str, source: &str) -> String {
    let digest = crate::digest::stable(format!("{machine}\0{mountpoint}\0{source}").as_bytes());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_QUEUE_NAME - "ssmfs--".len() - 16)
        .collect();
    format!("ssmfs-{host}-{digest:016x}")
}

/// Makes (or finds) the mount's queue, lets the topic send to it and subscribes it.
pub async fn make(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    topic: &str,
    name: &str,
) -> Result<Made, String> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "--events-topic: cannot create the queue {name}: {}",
                super::events::describe(&e)
            )
        })?
        .queue_url
        .ok_or("--events-topic: the new queue has no URL")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "--events-topic: cannot read the queue {name}: {}",
                super::events::describe(&e)
            )
        })?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or("--events-topic: the queue has no ARN")?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| {
            format!(
                "--events-topic: cannot set the queue's policy: {}",
                super::events::describe(&e)
            )
        })?;
    let subscription = sns
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(&arn)
        .attributes("RawMessageDelivery", "true")
        .return_subscription_arn(true)
        .send()
        .await
        .map_err(|e| {
            let e = e.into_service_error();
            format!(
                "--events-topic: cannot subscribe the queue to {topic}: {}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or_default()
            )
        })?
        .subscription_arn;
    info!(
        queue = name,
        topic, "change events: queue subscribed to the topic"
    );
    Ok(Made { url, subscription })
}

impl Made {
    /// Unsubscribes and deletes the queue (a clean stop).
    pub async fn remove(self, sqs: &aws_sdk_sqs::Client, sns: &aws_sdk_sns::Client) {
        if let Some(arn) = &self.subscription {
            if let Err(e) = sns.unsubscribe().subscription_arn(arn).send().await {
                warn!(error = %e.into_service_error(), "change events: cannot unsubscribe the queue");
            }
        }
        match sqs.delete_queue().queue_url(&self.url).send().await {
            Ok(_) => info!(queue = self.url, "change events: queue deleted"),
            Err(e) => {
                warn!(error = %super::events::describe(&e), "change events: cannot delete the queue")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_stable_valid_and_tell_mounts_apart() {
        let a = queue_name("web-1.example.com", "m1", "/mnt/ssm/app", "/app");
        assert_eq!(
            a,
            queue_name("web-1.example.com", "m1", "/mnt/ssm/app", "/app")
        );
        assert!(a.starts_with("ssmfs-web-1-example-com-"), "{a}");
        assert_ne!(
            a,
            queue_name("web-1.example.com", "m1", "/mnt/ssm/other", "/app")
        );
        assert_ne!(
            a,
            queue_name("web-1.example.com", "m2", "/mnt/ssm/app", "/app")
        );
        let long = queue_name(&"h".repeat(200), "m", "/m", "/s");
        assert!(long.len() <= MAX_QUEUE_NAME, "{}", long.len());
        assert!(long
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
