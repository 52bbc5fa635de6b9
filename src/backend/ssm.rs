//! The AWS SSM Parameter Store backend, on `aws-sdk-ssm`.
//!
//! Promises: every SDK error is classified into a [`BackendError`] from its error code; messages
//! are AWS's own (names, ARNs, actions), never a parameter value.

use std::time::SystemTime;

use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterType};
use aws_sdk_ssm::Client;
use zeroize::Zeroize;

use std::sync::Arc;

use super::{ApiCalls, Backend, BackendError, Op, Page, Param};
use crate::content::{Content, ParamType};
use crate::filter::{grouped, Filter};

/// SSM's largest page for GetParametersByPath.
const MAX_RESULTS: i32 = 10;

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

    async fn get_parameters_by_path(
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

    async fn get_parameter(&self, name: &str) -> Result<Option<Param>, BackendError> {
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

fn classify<E>(err: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify_status(err)
}

/// Sorts an SDK error (of any AWS service) into the classes the core acts on.
pub fn classify_status<E>(err: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    if let SdkError::ServiceError(_) = &err {
        let code = err.code().unwrap_or("Unknown");
        return by_code(code, err.message().unwrap_or(""), status);
    }
    if let SdkError::ResponseError(_) = &err {
        // An error body the SDK could not parse (AWS sends JSON; some emulators send XML):
        // its code still says what went wrong.
        let body = err
            .raw_response()
            .and_then(|r| r.body().bytes())
            .unwrap_or_default();
        if let Some((code, message)) = code_in_body(&String::from_utf8_lossy(body)) {
            return by_code(&code, &message, status);
        }
    }
    let text = one_line(&err);
    match status {
        Some(401 | 403) => {
            BackendError::Credentials(format!("HTTP {}: {text}", status.unwrap_or(0)))
        }
        Some(429) => BackendError::Throttled(text),
        _ if matches!(err, SdkError::ConstructionFailure(_)) => BackendError::Other(text),
        _ if text.contains("credentials") => BackendError::Credentials(text),
        _ => BackendError::Unavailable(text),
    }
}

fn by_code(code: &str, message: &str, status: Option<u16>) -> BackendError {
    let described = format!("{code}: {message}");
    match code {
        "AccessDeniedException" | "AccessDenied" => BackendError::AccessDenied(message.to_string()),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" => {
            BackendError::Throttled(described)
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "MissingAuthenticationToken" => BackendError::Credentials(described),
        _ if status.is_some_and(|s| s >= 500) => BackendError::Unavailable(described),
        _ => BackendError::Other(described),
    }
}

/// The error code and message in an XML (`<Code>`) or JSON (`__type`) error body.
fn code_in_body(body: &str) -> Option<(String, String)> {
    let between = |open: &str, close: &str| {
        let start = body.find(open)? + open.len();
        let end = body[start..].find(close)? + start;
        Some(body[start..end].to_string())
    };
    if let Some(code) = between("<Code>", "</Code>") {
        return Some((code, between("<Message>", "</Message>").unwrap_or_default()));
    }
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = json
        .get("__type")?
        .as_str()?
        .rsplit('#')
        .next()?
        .to_string();
    let message = json
        .get("message")
        .or_else(|| json.get("Message"))
        .and_then(|m| m.as_str());
    Some((code, message.unwrap_or_default().to_string()))
}

/// An error and its sources as one line, each cause once.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_found_in_xml_and_json_bodies() {
        let xml = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>no</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            code_in_body(xml),
            Some(("AccessDenied".into(), "no".into()))
        );
        let json = r#"{"__type":"com.amazon#ThrottlingException","message":"slow down"}"#;
        assert_eq!(
            code_in_body(json),
            Some(("ThrottlingException".into(), "slow down".into()))
        );
        assert_eq!(code_in_body("<html>"), None);
        assert!(matches!(
            by_code("AccessDeniedException", "x", Some(400)),
            BackendError::AccessDenied(_)
        ));
        assert!(matches!(
            by_code("InternalError", "x", Some(503)),
            BackendError::Unavailable(_)
        ));
    }
}
