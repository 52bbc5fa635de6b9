//! The AWS SSM Parameter Store backend, on `aws-sdk-ssm`.
//!
//! Promises: every SDK error is classified into a [`BackendError`] from its error code; messages
//! are AWS's own (names, ARNs, actions), never a parameter value.

use std::time::SystemTime;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::ParameterType;
use aws_sdk_ssm::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use zeroize::Zeroize;

use super::{Backend, BackendError, Page, Param};
use crate::content::{Content, ParamType};

/// SSM's largest page for GetParametersByPath.
const MAX_RESULTS: i32 = 10;

pub struct SsmBackend {
    client: Client,
    decrypt: bool,
}

impl SsmBackend {
    pub fn new(config: &aws_config::SdkConfig, decrypt: bool) -> Self {
        SsmBackend {
            client: Client::new(config),
            decrypt,
        }
    }
}

impl Backend for SsmBackend {
    async fn get_parameters_by_path(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> Result<Page, BackendError> {
        let out = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(recursive)
            .with_decryption(self.decrypt)
            .max_results(MAX_RESULTS)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(classify)?;
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
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(self.decrypt)
            .send()
            .await
        {
            Ok(out) => Ok(out.parameter.and_then(convert)),
            Err(err) if err.code() == Some("ParameterNotFound") => Ok(None),
            Err(err) => Err(classify(err)),
        }
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
    Some(Param {
        name: p.name.take()?,
        kind,
        content,
        version: p.version,
        last_modified: p
            .last_modified_date
            .and_then(|d| SystemTime::try_from(d).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH),
        arn: p.arn.take().unwrap_or_default(),
        data_type: p.data_type.take().unwrap_or_else(|| "text".to_string()),
    })
}

/// Sorts an SDK error into the classes the core acts on.
fn classify<E, R>(err: SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = || DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("").to_string();
            let described = format!("{code}: {message}");
            match code {
                "AccessDeniedException" | "AccessDenied" => BackendError::AccessDenied(message),
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
                "InternalServerError" | "InternalFailure" | "ServiceUnavailable" => {
                    BackendError::Unavailable(described)
                }
                _ => BackendError::Other(described),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let text = text();
            if text.contains("credentials") {
                BackendError::Credentials(text)
            } else {
                BackendError::Unavailable(text)
            }
        }
        _ => BackendError::Other(text()),
    }
}
