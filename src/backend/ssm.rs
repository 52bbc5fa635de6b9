//! The AWS SSM Parameter Store backend, on `aws-sdk-ssm`.
//!
//! Promises: every SDK error is classified by [`super::error::classify`]; messages are AWS's own
//! (names, ARNs, actions), never a parameter value.

use std::time::SystemTime;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterType};
use aws_sdk_ssm::Client;
use zeroize::Zeroize;

use std::sync::Arc;

use super::error::classify;
use super::{ApiCalls, Backend, BackendError, Op, Page, Param};
use crate::content::{Content, ParamType};
use crate::filter::{grouped, Filter};

/// SSM's largest page for GetParametersByPath.
const MAX_RESULTS: i32 = 10;
/// The most names GetParameters takes.
const MAX_NAMES: usize = 10;

pub struct SsmBackend {
    client: Client,
    calls: Arc<ApiCalls>,
    decrypt: bool,
    filters: Option<Vec<ParameterStringFilter>>,
}

impl SsmBackend {
    pub fn new(
        config: &aws_config::SdkConfig,
        calls: Arc<ApiCalls>,
        decrypt: bool,
        filters: &[Filter],
    ) -> Self {
        let filters: Vec<ParameterStringFilter> = grouped(filters)
            .into_iter()
            .map(|(key, values)| {
                ParameterStringFilter::builder()
                    .key(key.as_str())
                    .option("Equals")
                    .set_values(Some(values))
                    .build()
                    .expect("key is set")
            })
            .collect();
        SsmBackend {
            client: Client::new(config),
            calls,
            decrypt,
            filters: (!filters.is_empty()).then_some(filters),
        }
    }
}

impl Backend for SsmBackend {
    fn api_calls(&self) -> Arc<ApiCalls> {
        self.calls.clone()
    }

    fn gets_every_name(&self) -> bool {
        // GetParameter cannot apply the listing's filters.
        self.filters.is_none()
    }

    async fn list(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> Result<Page, BackendError> {
        let out = self
            .calls
            .call(Op::GetParametersByPath, || async {
                self.client
                    .get_parameters_by_path()
                    .path(path)
                    .recursive(recursive)
                    .with_decryption(self.decrypt)
                    .max_results(MAX_RESULTS)
                    .set_parameter_filters(self.filters.clone())
                    .set_next_token(next_token.clone())
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        let next_token = out.next_token.clone();
        let params = out
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter_map(convert)
            .collect();
        Ok(Page { params, next_token })
    }

    fn batch_size(&self) -> usize {
        MAX_NAMES
    }

    async fn get_many(&self, names: &[String]) -> Result<Vec<Option<Param>>, BackendError> {
        let out = self
            .calls
            .call(Op::GetParameters, || async {
                self.client
                    .get_parameters()
                    .set_names(Some(names.to_vec()))
                    .with_decryption(self.decrypt)
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        // Names AWS does not know, or versions and labels it cannot find, are listed in
        // InvalidParameters: they stay `None`.
        let mut found: Vec<Option<Param>> = names.iter().map(|_| None).collect();
        let mut unmatched = 0;
        for p in out.parameters.unwrap_or_default() {
            let asked = names.iter().position(|asked| {
                p.name
                    .as_deref()
                    .is_some_and(|name| answers(asked, name, p.selector.as_deref(), p.version))
            });
            match asked {
                Some(i) => found[i] = convert(p),
                None => {
                    // Its value is zeroed as it goes.
                    drop(convert(p));
                    unmatched += 1;
                }
            }
        }
        if unmatched > 0 {
            // Some name may be missing for this reason: none is taken for absent.
            return Err(BackendError::Other(format!(
                "GetParameters answered {unmatched} parameter(s) that match no name asked for"
            )));
        }
        Ok(found)
    }

    async fn get(&self, name: &str) -> Result<Option<Param>, BackendError> {
        self.calls
            .call(Op::GetParameter, || async {
                match self
                    .client
                    .get_parameter()
                    .name(name)
                    .with_decryption(self.decrypt)
                    .send()
                    .await
                {
                    Ok(out) => Ok(out.parameter.and_then(convert)),
                    Err(err)
                        if matches!(
                            err.code(),
                            Some(
                                "ParameterNotFound"
                                    | "ParameterVersionNotFound"
                                    | "ParameterVersionLabelNotFound"
                            )
                        ) =>
                    {
                        Ok(None)
                    }
                    Err(err) => Err(classify(err)),
                }
            })
            .await
    }
}

/// Whether a parameter of GetParameters' answer, named `name` at `version`, answers the name
/// `asked` (which may end in `:VERSION` or `:LABEL`). AWS names the parameter without the
/// selector and gives the selector as asked (`:3`, `:prod`); moto leaves the selector out, so a
/// version is matched on the answer's version, and a label on the name alone (a call asks for
/// one version of a parameter at most).
fn answers(asked: &str, name: &str, selector: Option<&str>, version: i64) -> bool {
    let (base, wanted) = match asked.split_once(crate::names::SELECTOR) {
        Some((base, wanted)) => (base, Some(wanted)),
        None => (asked, None),
    };
    if base != name {
        return false;
    }
    match (
        wanted,
        selector.and_then(|s| s.strip_prefix(crate::names::SELECTOR)),
    ) {
        (Some(wanted), Some(given)) => wanted == given,
        (Some(wanted), None) => wanted
            .parse::<i64>()
            .map_or(true, |wanted| wanted == version),
        (None, given) => given.is_none(),
    }
}

/// Takes the SDK's parameter apart, moving the value into [`Content`] and zeroing what is left.
fn convert(mut p: aws_sdk_ssm::types::Parameter) -> Option<Param> {
    let kind = match p.r#type.take()? {
        ParameterType::String => ParamType::String,
        ParameterType::StringList => ParamType::StringList,
        ParameterType::SecureString => ParamType::SecureString,
        _ => ParamType::String,
    };
    let value = p.value.take().unwrap_or_default();
    let content = Content::render(kind, value);
    if let Some(v) = p.source_result.as_mut() {
        v.zeroize();
    }
    let modified = p.last_modified_date.map_or(SystemTime::UNIX_EPOCH, |d| {
        SystemTime::try_from(d).unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let name = p.name.take()?;
    let arn = p.arn.take().unwrap_or_default();
    let data_type = p.data_type.take().unwrap_or_else(|| "text".to_string());
    Some(ssm_param(
        name, kind, content, p.version, modified, arn, data_type,
    ))
}

/// A parameter with SSM's metadata as `user.ssm.*` attributes.
pub fn ssm_param(
    name: String,
    kind: ParamType,
    content: Content,
    version: i64,
    modified: SystemTime,
    arn: String,
    data_type: String,
) -> Param {
    Param {
        name,
        content,
        version: version.to_string(),
        secret: kind == ParamType::SecureString,
        modified,
        xattrs: vec![
            ("user.ssm.arn", arn),
            ("user.ssm.data_type", data_type),
            ("user.ssm.last_modified", rfc3339(modified)),
            ("user.ssm.type", kind.as_str().to_string()),
            ("user.ssm.version", version.to_string()),
        ],
        unreadable: None,
        derived: false,
    }
}

/// A time as RFC 3339, in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::canned::Canned;

    const JSON: (&str, &str) = ("Content-Type", "application/x-amz-json-1.1");

    /// An answer that matches no name asked for fails the call: no name is taken for absent,
    /// and the value goes nowhere.
    #[tokio::test]
    async fn an_answer_for_a_name_not_asked_for_fails_the_call() {
        let body = r#"{"Parameters":[{"Name":"/other","Type":"String","Value":"hunter2","Version":1}],"InvalidParameters":[]}"#;
        let canned = Canned::start(200, &[JSON], body).await;
        let backend = SsmBackend::new(&canned.config, Arc::new(ApiCalls::paced(0)), true, &[]);
        let names = ["/a".to_string(), "/b".to_string()];
        let err = backend.get_many(&names).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn answers_are_matched_to_names_with_or_without_the_selector() {
        // As AWS answers: the selector given back.
        assert!(answers("/a/b:3", "/a/b", Some(":3"), 3));
        assert!(answers("/a/b:prod", "/a/b", Some(":prod"), 7));
        assert!(!answers("/a/b:prod", "/a/b", Some(":test"), 7));
        // As moto answers: no selector; a version must match, a label cannot be checked.
        assert!(answers("/a/b:3", "/a/b", None, 3));
        assert!(!answers("/a/b:3", "/a/b", None, 4));
        assert!(answers("/a/b:prod", "/a/b", None, 7));
        // Plain names.
        assert!(answers("/a/b", "/a/b", None, 9));
        assert!(!answers("/a/b", "/a/bc", None, 9));
        assert!(!answers("/a/b", "/a/b", Some(":3"), 3));
        assert!(!answers("/a/b:3", "/a/c", Some(":3"), 3));
    }

    /// A 2xx answer that does not deserialize may hold a value: none of it reaches the error.
    #[tokio::test]
    async fn an_unreadable_answer_never_reaches_the_error() {
        let body = "<Response><Code>hunter2</Code><Message>hunter2</Message></Response>";
        let canned = Canned::start(200, &[JSON], body).await;
        let backend = SsmBackend::new(&canned.config, Arc::new(ApiCalls::paced(0)), true, &[]);
        let err = backend.get("/app/x").await.unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
}
