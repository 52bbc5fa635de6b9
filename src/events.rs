//! Change events: what one message of an SQS queue says changed in AWS. Pure (it knows JSON,
//! not the mount or AWS's clients), so it is tested and fuzzed on its own.
//!
//! A message is an EventBridge event, sent to the queue by an EventBridge rule, or the same
//! event wrapped in an SNS notification (EventBridge → SNS → SQS without raw delivery):
//! - SSM: source `aws.ssm`, detail-type `Parameter Store Change`, `detail.operation` `Create`,
//!   `Update`, `Delete` or `LabelParameterVersion`, `detail.name` the parameter (with or without
//!   its leading `/`);
//! - Secrets Manager, through CloudTrail: detail-type `AWS API Call via CloudTrail` for
//!   `PutSecretValue`, `UpdateSecret`, `UpdateSecretVersionStage`, `RotateSecret`,
//!   `DeleteSecret`, `RestoreSecret` and `CreateSecret`, the secret in
//!   `requestParameters.secretId` (or `.name`), a name or an ARN; and `AWS Service Event via
//!   CloudTrail` `RotationSucceeded`, the secret in `additionalEventData.SecretId`.
//!
//! Promises: never panics, whatever the body; a body that is not one of these shapes is
//! [`Unparseable`] with a reason that never quotes it.

use serde_json::Value;

use crate::names::Dialect;

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A parameter or secret changed: its full name, and whether labels (SSM labels, Secrets
    /// Manager staging labels) may have moved.
    Changed {
        dialect: Dialect,
        name: String,
        labels: bool,
    },
    /// A well-formed event of no concern here (another source, another operation).
    Other,
}

/// Why a message is not an event: a reason, never the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unparseable(pub &'static str);

const SECRETS_CALLS: [&str; 7] = [
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "RotateSecret",
    "DeleteSecret",
    "RestoreSecret",
    "CreateSecret",
];

/// Reads one message body.
pub fn parse(body: &str) -> Result<Event, Unparseable> {
    let value: Value = serde_json::from_str(body).map_err(|_| Unparseable("not JSON"))?;
    // An SNS notification: the event is its Message, as text.
    if value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let message = value
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(Unparseable("an SNS notification without a Message"))?;
        let inner: Value = serde_json::from_str(message)
            .map_err(|_| Unparseable("an SNS notification around something not JSON"))?;
        return event(&inner)
            .map_err(|_| Unparseable("an SNS notification around something not an event"));
    }
    event(&value)
}

fn event(value: &Value) -> Result<Event, Unparseable> {
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let shape = Unparseable("JSON that is not an event");
    let source = field(value, "source").ok_or(shape)?;
    let kind = field(value, "detail-type").ok_or(shape)?;
    let detail = value.get("detail").filter(|d| d.is_object()).ok_or(shape)?;
    match (source.as_str(), kind.as_str()) {
        ("aws.ssm", "Parameter Store Change") => {
            let op = field(detail, "operation").ok_or(shape)?;
            let labels = match op.as_str() {
                "Create" | "Update" | "Delete" => false,
                "LabelParameterVersion" => true,
                _ => return Ok(Event::Other),
            };
            let name = field(detail, "name")
                .filter(|n| !n.is_empty())
                .ok_or(Unparseable("a parameter change without a name"))?;
            let name = if name.starts_with('/') {
                name
            } else {
                format!("/{name}")
            };
            Ok(Event::Changed {
                dialect: Dialect::Ssm,
                name,
                labels,
            })
        }
        ("aws.secretsmanager", "AWS API Call via CloudTrail") => {
            let call = field(detail, "eventName").ok_or(shape)?;
            if !SECRETS_CALLS.contains(&call.as_str()) {
                return Ok(Event::Other);
            }
            let params = detail.get("requestParameters").ok_or(shape)?;
            // The response's ARN is whole; a secretId may be a partial ARN.
            let id = detail
                .get("responseElements")
                .and_then(|r| field(r, "arn"))
                .or_else(|| field(params, "secretId"))
                .or_else(|| field(params, "name"))
                .ok_or(Unparseable("a secret change without a secret"))?;
            secret(&id)
        }
        ("aws.secretsmanager", "AWS Service Event via CloudTrail") => {
            if field(detail, "eventName").as_deref() != Some("RotationSucceeded") {
                return Ok(Event::Other);
            }
            let id = detail
                .get("additionalEventData")
                .and_then(|d| field(d, "SecretId"))
                .ok_or(Unparseable("a rotation without a secret"))?;
            secret(&id)
        }
        _ => Ok(Event::Other),
    }
}

/// A secret change, by the secret's name or ARN.
fn secret(id: &str) -> Result<Event, Unparseable> {
    let name = secret_name(id).ok_or(Unparseable("a secret id that is no name or ARN"))?;
    Ok(Event::Changed {
        dialect: Dialect::SecretsManager,
        name,
        // A new version moves the staging labels.
        labels: true,
    })
}

/// A secret's name from its name or ARN (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX`,
/// where Secrets Manager adds `-` and six characters to the name).
pub fn secret_name(id: &str) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    if !id.starts_with("arn:") {
        return Some(id.to_string());
    }
    let (_, rest) = id.split_once(":secret:")?;
    let (name, suffix) = rest.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && !name.is_empty())
        .then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssm(op: &str, name: &str) -> String {
        serde_json::json!({
            "version": "0",
            "source": "aws.ssm",
            "detail-type": "Parameter Store Change",
            "detail": {"operation": op, "name": name, "type": "String"},
        })
        .to_string()
    }

    fn changed(dialect: Dialect, name: &str, labels: bool) -> Result<Event, Unparseable> {
        Ok(Event::Changed {
            dialect,
            name: name.to_string(),
            labels,
        })
    }

    #[test]
    fn parameter_changes_name_the_parameter() {
        assert_eq!(
            parse(&ssm("Update", "/app/db")),
            changed(Dialect::Ssm, "/app/db", false)
        );
        assert_eq!(
            parse(&ssm("Create", "app/db")),
            changed(Dialect::Ssm, "/app/db", false)
        );
        assert_eq!(
            parse(&ssm("Delete", "/x")),
            changed(Dialect::Ssm, "/x", false)
        );
        assert_eq!(
            parse(&ssm("LabelParameterVersion", "/a")),
            changed(Dialect::Ssm, "/a", true)
        );
        assert_eq!(parse(&ssm("Describe", "/a")), Ok(Event::Other));
        assert_eq!(
            parse(&ssm("Update", "")),
            Err(Unparseable("a parameter change without a name"))
        );
    }

    #[test]
    fn sns_envelopes_are_opened() {
        let sns = serde_json::json!({
            "Type": "Notification",
            "MessageId": "1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "Message": ssm("Update", "/app/db"),
        })
        .to_string();
        assert_eq!(parse(&sns), changed(Dialect::Ssm, "/app/db", false));
        let garbage =
            serde_json::json!({"Type": "Notification", "Message": "{not json"}).to_string();
        assert!(parse(&garbage).is_err());
        let other = serde_json::json!({"Type": "Notification", "Message": "{\"a\":1}"}).to_string();
        assert!(parse(&other).is_err());
        let none = serde_json::json!({"Type": "Notification"}).to_string();
        assert!(parse(&none).is_err());
    }

    #[test]
    fn secret_changes_come_through_cloudtrail() {
        let call = |name: &str, params: Value| {
            serde_json::json!({
                "source": "aws.secretsmanager",
                "detail-type": "AWS API Call via CloudTrail",
                "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": name,
                           "requestParameters": params},
            })
            .to_string()
        };
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbC123";
        assert_eq!(
            parse(&call(
                "PutSecretValue",
                serde_json::json!({"secretId": arn})
            )),
            changed(Dialect::SecretsManager, "prod/db", true)
        );
        assert_eq!(
            parse(&call(
                "CreateSecret",
                serde_json::json!({"name": "prod/new"})
            )),
            changed(Dialect::SecretsManager, "prod/new", true)
        );
        assert_eq!(
            parse(&call(
                "GetSecretValue",
                serde_json::json!({"secretId": "x"})
            )),
            Ok(Event::Other)
        );
        let rotated = serde_json::json!({
            "source": "aws.secretsmanager",
            "detail-type": "AWS Service Event via CloudTrail",
            "detail": {"eventName": "RotationSucceeded", "additionalEventData": {"SecretId": arn}},
        })
        .to_string();
        assert_eq!(
            parse(&rotated),
            changed(Dialect::SecretsManager, "prod/db", true)
        );
        assert_eq!(secret_name("arn:aws:secretsmanager:r:a:secret:db-x"), None);
        assert_eq!(secret_name("db-with-dash"), Some("db-with-dash".into()));
    }

    #[test]
    fn anything_else_is_unparseable_or_of_no_concern() {
        assert_eq!(parse("not json"), Err(Unparseable("not JSON")));
        assert_eq!(
            parse("[1,2]"),
            Err(Unparseable("JSON that is not an event"))
        );
        assert_eq!(
            parse("{\"source\":\"aws.ssm\"}"),
            Err(Unparseable("JSON that is not an event"))
        );
        let ec2 = serde_json::json!({"source": "aws.ec2", "detail-type": "x", "detail": {}});
        assert_eq!(parse(&ec2.to_string()), Ok(Event::Other));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(256 * 1024));
        assert!(parse(&big).is_err());
    }
}
