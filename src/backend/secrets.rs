//! The AWS Secrets Manager backend, on `aws-sdk-secretsmanager`: secrets as a tree of files.
//!
//! A listing is `ListSecrets` (names, and the VersionId each has as AWSCURRENT, 100 a page)
//! followed by `BatchGetSecretValue` for the secrets whose current version is not already held
//! (20 a call). So a cold prefix of 45 secrets costs one listing and three value calls, and a
//! refresh in which nothing changed costs the listing alone, whatever the number of pages. A
//! one-level listing fetches only the values it returns (ListSecrets itself always shows the
//! whole subtree). The values held between listings are kept in [`super::held::Held`]: those of
//! secrets a complete listing no longer shows are dropped, and their number is capped.
//!
//! A secret whose value is a JSON object is also shown as a directory of its keys (strings raw,
//! other values as JSON text, nested objects as subdirectories): each key is a *derived* entry
//! named `SECRET/KEY`, so the core's rule for a name that is both a file and a directory applies
//! (`db` is the directory, `db%` the whole secret).
//!
//! Promises: a secret that cannot be read (access denied, a KMS error) is shown, reads as EACCES,
//! and is reported once in the log; it never breaks the rest of the mount. Errors carry AWS's
//! error code and message, never a value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_sdk_secretsmanager::Client;
use tracing::warn;
use zeroize::Zeroize;

use super::error::classify;
use super::held::Held;
use super::ssm::rfc3339;
use super::{ApiCalls, Backend, BackendError, Op, Page, Param};
use crate::content::Content;
use crate::json::expand_json;

/// Secrets Manager's largest page for ListSecrets.
const LIST_PAGE: i32 = 100;
/// Secrets Manager's largest batch for BatchGetSecretValue.
const BATCH: usize = 20;
/// The staging label of a secret's current version.
const CURRENT: &str = "AWSCURRENT";
/// Secrets whose values are held between listings, at most. Above the largest prefix a mount is
/// expected to list (past it, every refresh would fetch the least recently used again), and a
/// bound on memory when listings are abandoned part-way and so never prune. The core holds the
/// same `Content` (shared, not copied) for as long as it shows the secret.
const MAX_HELD: usize = 20_000;

/// Unreadable secrets remembered as reported: a bound on memory, not a limit on secrets.
const MAX_REPORTED: usize = 1024;
pub struct SecretsBackend {
    client: Client,
    calls: Arc<ApiCalls>,
    expand_json: bool,
    /// The entries made from each secret's current version: what a listing reuses when the
    /// version has not changed.
    held: Mutex<Held>,
    /// (secret, error code) already reported, so that each problem is logged once (up to
    /// `MAX_REPORTED` remembered; past that the oldest may be reported again).
    reported: Mutex<crate::capped::Capped<(String, String), ()>>,
}

impl SecretsBackend {
    pub fn new(config: &aws_config::SdkConfig, calls: Arc<ApiCalls>, expand_json: bool) -> Self {
        SecretsBackend {
            client: Client::new(config),
            calls,
            expand_json,
            held: Mutex::new(Held::new(MAX_HELD)),
            reported: Mutex::new(crate::capped::Capped::new(MAX_REPORTED)),
        }
    }

    /// Secrets whose values are held for the next listing.
    pub fn held_secrets(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Fetches the current values of `names` (at most 20), keyed by name.
    async fn batch_get(
        &self,
        names: Vec<String>,
    ) -> Result<HashMap<String, Vec<Param>>, BackendError> {
        let out = self
            .calls
            .call(Op::BatchGetSecretValue, || async {
                self.client
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(names.clone()))
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        let mut got = HashMap::new();
        for mut entry in out.secret_values.unwrap_or_default() {
            let Some(name) = entry.name.take() else {
                continue;
            };
            let (value, meta) = unpack(
                entry.secret_string.take(),
                entry.secret_binary.take(),
                entry.arn.take(),
                entry.version_id.take(),
                entry.version_stages.take(),
                entry.created_date,
            );
            got.insert(name.clone(), self.entries(name, value, meta));
        }
        for err in out.errors.unwrap_or_default() {
            let (Some(name), Some(code)) = (err.secret_id, err.error_code) else {
                continue;
            };
            if self
                .reported
                .lock()
                .unwrap()
                .put((name.clone(), code.clone()), ())
                .is_none()
            {
                warn!(secret = %name, error = %code, "secret cannot be read; it reads as EACCES");
            }
            got.insert(name.clone(), vec![unreadable(name, code)]);
        }
        Ok(got)
    }

    /// The entries one secret value makes: the secret itself, and its keys if it is a JSON
    /// object and expansion is on.
    fn entries(&self, name: String, mut value: Value, meta: Meta) -> Vec<Param> {
        let modified = meta.created.unwrap_or(SystemTime::UNIX_EPOCH);
        let xattrs = vec![
            ("user.sm.arn", meta.arn),
            ("user.sm.created", rfc3339(modified)),
            ("user.sm.stages", meta.stages.join(",")),
            ("user.sm.version_id", meta.version_id.clone()),
        ];
        let entry = |name: String, content: Content, derived: bool| Param {
            name,
            content,
            version: meta.version_id.clone(),
            secret: true,
            modified,
            xattrs: xattrs.clone(),
            unreadable: None,
            derived,
        };
        let mut out = Vec::new();
        if let (true, Some(text)) = (self.expand_json, &value.string) {
            for (key, bytes) in expand_json(&name, text.as_bytes()) {
                out.push(entry(key, Content::from(bytes), true));
            }
        }
        let raw = match (value.string.take(), value.binary.take()) {
            (Some(s), _) => s.into_bytes(),
            (None, Some(b)) => b,
            (None, None) => Vec::new(),
        };
        out.insert(0, entry(name, Content::from(raw), false));
        out
    }

    fn keep(path: &str, name: &str, recursive: bool) -> bool {
        if path.is_empty() {
            return recursive || !name.contains('/');
        }
        match name.strip_prefix(path) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('/')
                .is_some_and(|r| recursive || !r.contains('/')),
            None => false,
        }
    }
}

/// A secret's value as fetched; zeroed when dropped.
struct Value {
    string: Option<String>,
    binary: Option<Vec<u8>>,
}

impl Drop for Value {
    fn drop(&mut self) {
        self.string.zeroize();
        self.binary.zeroize();
    }
}

struct Meta {
    arn: String,
    version_id: String,
    stages: Vec<String>,
    created: Option<SystemTime>,
}

/// A secret version's value and metadata, from the fields that BatchGetSecretValue's entries and
/// GetSecretValue's output both have.
fn unpack(
    string: Option<String>,
    binary: Option<aws_sdk_secretsmanager::primitives::Blob>,
    arn: Option<String>,
    version_id: Option<String>,
    stages: Option<Vec<String>>,
    created: Option<aws_sdk_secretsmanager::primitives::DateTime>,
) -> (Value, Meta) {
    let value = Value {
        string,
        binary: binary.map(|b| b.into_inner()),
    };
    let meta = Meta {
        arn: arn.unwrap_or_default(),
        version_id: version_id.unwrap_or_default(),
        stages: stages.unwrap_or_default(),
        created: created.and_then(|d| SystemTime::try_from(d).ok()),
    };
    (value, meta)
}

fn unreadable(name: String, code: String) -> Param {
    Param {
        name,
        content: Content::default(),
        version: format!("unreadable:{code}"),
        secret: true,
        modified: SystemTime::UNIX_EPOCH,
        xattrs: Vec::new(),
        unreadable: Some(code),
        derived: false,
    }
}

impl Backend for SecretsBackend {
    fn api_calls(&self) -> Arc<ApiCalls> {
        self.calls.clone()
    }

    /// Keys of JSON secrets exist only inside their secret's value: only listings find them.
    fn gets_every_name(&self) -> bool {
        !self.expand_json
    }

    fn page_size(&self) -> usize {
        LIST_PAGE as usize
    }

    /// One page of the secrets at or below `path`, with their values. The secret named `path`
    /// itself is included: its JSON keys are entries of the directory `path`.
    async fn list(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> Result<Page, BackendError> {
        let out = self
            .calls
            .call(Op::ListSecrets, || async {
                let mut request = self
                    .client
                    .list_secrets()
                    .max_results(LIST_PAGE)
                    .set_next_token(next_token.clone());
                if !path.is_empty() {
                    request = request.filters(
                        Filter::builder()
                            .key(FilterNameStringType::Name)
                            .values(path)
                            .build(),
                    );
                }
                request.send().await.map_err(classify)
            })
            .await?;
        // The name filter is a prefix match that ignores case: keep exactly what is below path.
        let listed: Vec<(String, String)> = out
            .secret_list
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let current = s
                    .secret_versions_to_stages?
                    .into_iter()
                    .find(|(_, stages)| stages.iter().any(|st| st == CURRENT))?
                    .0;
                Some((s.name?, current))
            })
            .filter(|(name, _)| Self::keep(path, name, true))
            .collect();

        // ListSecrets has no one-level mode: a page shows the whole subtree. Only the values a
        // listing returns are fetched; the rest of the page still counts as seen.
        let (mut params, fresh) = self.held.lock().unwrap().reuse(
            listed
                .iter()
                .filter(|(name, _)| Self::keep(path, name, recursive))
                .map(|(name, version)| (name.as_str(), version.as_str())),
        );
        for chunk in fresh.chunks(BATCH) {
            let got = self.batch_get(chunk.to_vec()).await?;
            let mut held = self.held.lock().unwrap();
            for (name, entries) in got {
                params.extend(entries.iter().cloned());
                held.insert(name, entries);
            }
        }
        // Recorded once the page is whole, so that a page retried after a failure still
        // continues its listing; the last page of a complete listing drops the secrets gone.
        self.held.lock().unwrap().listed(
            path,
            next_token.as_deref(),
            listed.iter().map(|(name, _)| name.as_str()),
            out.next_token.as_deref(),
            |name| Self::keep(path, name, true),
        );
        params.retain(|p| p.name == path || Self::keep(path, &p.name, recursive));
        Ok(Page {
            params,
            next_token: out.next_token,
        })
    }

    /// `GetSecretValue`: `name` alone is the current version; `name:LABEL` a staging label;
    /// `name:VERSIONID` a version.
    async fn get(&self, name: &str) -> Result<Option<Param>, BackendError> {
        let (id, selector) = match name.split_once(':') {
            Some((id, sel)) => (id, Some(sel)),
            None => (name, None),
        };
        let found = self
            .calls
            .call(Op::GetSecretValue, || async {
                let mut request = self.client.get_secret_value().secret_id(id);
                request = match selector {
                    Some(sel)
                        if crate::names::Selector::parse_secrets(sel)
                            .is_some_and(|s| s.is_version()) =>
                    {
                        request.version_id(sel)
                    }
                    Some(label) => request.version_stage(label),
                    None => request,
                };
                match request.send().await {
                    Ok(out) => Ok(Some(out)),
                    Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
                    Err(err) => Err(classify(err)),
                }
            })
            .await?;
        let Some(mut out) = found else {
            return Ok(None);
        };
        let (value, meta) = unpack(
            out.secret_string.take(),
            out.secret_binary.take(),
            out.arn.take(),
            out.version_id.take(),
            out.version_stages.take(),
            out.created_date,
        );
        let name = out.name.take().unwrap_or_else(|| id.to_string());
        Ok(self.entries(name, value, meta).into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_keep_what_is_below_the_path() {
        assert!(
            SecretsBackend::keep("prod", "prod", true),
            "the secret named path itself"
        );
        assert!(SecretsBackend::keep("prod", "prod/db", false));
        assert!(!SecretsBackend::keep("prod", "prod/db/x", false));
        assert!(SecretsBackend::keep("prod", "prod/db/x", true));
        assert!(!SecretsBackend::keep("prod", "production/x", true));
        assert!(
            !SecretsBackend::keep("prod", "PROD/x", true),
            "the filter ignores case; we do not"
        );
        assert!(SecretsBackend::keep("", "a", false));
        assert!(!SecretsBackend::keep("", "a/b", false));
    }
}
