//! The one place where an AWS SDK error (of any service ssmfs calls) becomes a [`BackendError`].
//!
//! Classification looks only at what the SDK has already taken apart: which [`SdkError`] variant
//! the failure is, the error code of a service error ([`ProvideErrorMetadata::code`]) or, for an
//! error document the SDK could not parse, the code in the `X-Amzn-ErrorType` header, the HTTP
//! status, and the *types* in the error's source chain (a credentials error, an I/O error). It
//! never searches a response body or an error's text.
//!
//! Promises: the text put into a `BackendError` never holds a byte of a response body. A service
//! error contributes its code and the message the SDK parsed out of the error document (AWS's
//! own words: actions, ARNs, names); an answer the SDK could not read contributes its HTTP status
//! and nothing else, because a 2xx body that fails to deserialize may well hold a secret value,
//! and the deserializer's own message may quote it.

use std::error::Error;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

use super::BackendError;

/// Sorts an SDK error of any AWS service into the classes the core acts on.
///
/// `SdkError` and `HttpResponse` are the same types in every `aws-sdk-*` crate (they come from
/// `aws-smithy-runtime-api`), so the SSM crate's names serve for Secrets Manager as well.
pub fn classify<E>(err: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let status = raw.status().as_u16();
            // An error document in another format than the protocol's (moto sends XML on
            // JSON-protocol services) leaves the SDK without a code (an "unhandled" error, or a
            // `ResponseError` below, depending on the SDK's version); the header still has it.
            let code = err.code().or_else(|| header_code(raw));
            by_code(code, err.message().unwrap_or(""), status)
        }
        SdkError::ResponseError(response) => {
            // The SDK got an answer it could not read. The body is never looked at: it, or a
            // deserializer's message quoting it, may hold a value.
            let raw = response.raw();
            let status = raw.status().as_u16();
            if has_source::<std::io::Error>(&err) {
                // The body was cut off on its way: the network failed, not the request.
                return BackendError::Unavailable(format!(
                    "the answer (HTTP {status}) was cut off"
                ));
            }
            // As above: a code the error document did not give may be in the header.
            let code = if status >= 400 {
                header_code(raw)
            } else {
                None
            };
            by_code(code, "", status)
        }
        SdkError::TimeoutError(_) => BackendError::Unavailable(chain(&err)),
        SdkError::DispatchFailure(dispatch) => {
            // Signing needs credentials; when the provider fails, the request is never sent and
            // the failure surfaces here, before any connection.
            if has_source::<CredentialsError>(&err) {
                BackendError::Credentials(chain(&err))
            } else if dispatch.is_user() {
                BackendError::Other(chain(&err))
            } else {
                // I/O, a timeout, or another connector failure: AWS (or the way to it) is down.
                BackendError::Unavailable(chain(&err))
            }
        }
        SdkError::ConstructionFailure(_) => {
            if has_source::<CredentialsError>(&err) {
                BackendError::Credentials(chain(&err))
            } else {
                BackendError::Other(chain(&err))
            }
        }
        // `SdkError` is non-exhaustive; a future variant has no answer to go by.
        _ => BackendError::Unavailable(chain(&err)),
    }
}

/// A service error, by its code when there is one, else by its HTTP status alone.
fn by_code(code: Option<&str>, message: &str, status: u16) -> BackendError {
    let described = match (code, message) {
        (Some(code), "") => code.to_string(),
        (Some(code), message) => format!("{code}: {message}"),
        (None, "") => format!("HTTP {status}"),
        (None, message) => format!("HTTP {status}: {message}"),
    };
    let Some(code) = code else {
        return by_status(status, described);
    };
    match code {
        "AccessDeniedException" | "AccessDenied" => {
            BackendError::AccessDenied(if message.is_empty() {
                code.to_string()
            } else {
                message.to_string()
            })
        }
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => BackendError::Throttled(described),
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "MissingAuthenticationToken"
        | "AuthFailure" => BackendError::Credentials(described),
        _ => by_status(status, described),
    }
}

/// The error code in the `X-Amzn-ErrorType` header (`Code`, `Code:uri` or `namespace#Code`), if
/// it is one: letters, digits and dots only.
fn header_code(raw: &HttpResponse) -> Option<&str> {
    let value = raw.headers().get("x-amzn-errortype")?;
    let code = value.split(':').next()?.rsplit('#').next()?;
    let plain = !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    plain.then_some(code)
}

/// What a status says when there is no code to go by: the fallback for answers the SDK could not
/// take apart.
fn by_status(status: u16, described: String) -> BackendError {
    match status {
        401 => BackendError::Credentials(described),
        // Without a code, a 403 cannot say whether the signature or the policy refused. AWS
        // always names the code on its JSON services, so a bare 403 comes from something else on
        // the way (a proxy, a gateway): it refused, and trying again will not change its mind.
        // (moto answers both an unknown access key and a missing permission this way, with the
        // code only inside an XML body: both read as access denied here.)
        403 => BackendError::AccessDenied(described),
        429 => BackendError::Throttled(described),
        500..=599 => BackendError::Unavailable(described),
        // A 2xx the SDK could not read: most likely something on the way garbled it (a proxy, a
        // captive portal). Transient, so the last good values are served meanwhile.
        200..=299 => BackendError::Unavailable(described),
        _ => BackendError::Other(described),
    }
}

/// Whether an error of type `T` is among `err`'s sources.
fn has_source<T: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    let mut next = err.source();
    while let Some(e) = next {
        if e.is::<T>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// An error and its sources as one line, each cause once. Only for failures that came with no
/// response (timeouts, connections, credentials, building the request): none holds a body.
fn chain(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn Error> = Some(err);
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
    use std::sync::Arc;

    use super::*;
    use crate::backend::canned::Canned;
    use crate::backend::secrets::SecretsBackend;
    use crate::backend::ssm::SsmBackend;
    use crate::backend::{ApiCalls, Backend};

    const JSON: (&str, &str) = ("Content-Type", "application/x-amz-json-1.1");
    const XML: (&str, &str) = ("Content-Type", "application/xml");

    /// What `GetParameter` (SSM) and `GetSecretValue` (Secrets Manager) make of one canned answer.
    async fn both(status: u16, headers: &[(&str, &str)], body: &str) -> [BackendError; 2] {
        let canned = Canned::start(status, headers, body).await;
        let calls = Arc::new(ApiCalls::paced(0));
        let ssm = SsmBackend::new(&canned.config, calls.clone(), true, &[]);
        let sm = SecretsBackend::new(&canned.config, calls, false);
        [
            ssm.get("/app/x").await.unwrap_err(),
            sm.get("app/x").await.unwrap_err(),
        ]
    }

    #[tokio::test]
    async fn a_2xx_answer_that_does_not_parse_shows_none_of_its_body() {
        for body in [
            "<Response><Code>hunter2</Code><Message>hunter2</Message></Response>",
            r#"{"__type":"hunter2","message":"hunter2","Parameter":"#,
            r#"{"Parameter":{"Name":"/app/x","Value":hunter2}}"#,
        ] {
            for err in both(200, &[JSON], body).await {
                assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
                assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
            }
        }
    }

    #[tokio::test]
    async fn json_error_documents_are_classified_by_their_code() {
        let body = r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"User: x is not authorized to perform: ssm:GetParameter"}"#;
        for err in both(400, &[JSON], body).await {
            assert_eq!(
                err,
                BackendError::AccessDenied(
                    "User: x is not authorized to perform: ssm:GetParameter".into()
                )
            );
        }
        let body = r#"{"__type":"UnrecognizedClientException","message":"bad token"}"#;
        for err in both(400, &[JSON], body).await {
            assert!(matches!(err, BackendError::Credentials(_)), "{err:?}");
        }
        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        for err in both(400, &[JSON], body).await {
            assert!(matches!(err, BackendError::Throttled(_)), "{err:?}");
        }
        let body = r#"{"__type":"InvalidKeyId","message":"no such key"}"#;
        for err in both(400, &[JSON], body).await {
            assert!(matches!(err, BackendError::Other(_)), "{err:?}");
        }
    }

    /// moto answers JSON-protocol services with XML error documents, and names the code in the
    /// `X-Amzn-ErrorType` header too: the SDK takes the code from the header.
    #[tokio::test]
    async fn moto_style_xml_errors_are_classified_by_the_header_code() {
        let xml = |code: &str| {
            format!("<?xml version=\"1.0\"?><ErrorResponse><Errors><Error><Code>{code}</Code><Message>m</Message><Type>Sender</Type></Error></Errors></ErrorResponse>")
        };
        let denied = both(
            403,
            &[XML, ("X-Amzn-ErrorType", "AccessDenied")],
            &xml("AccessDenied"),
        )
        .await;
        for err in denied {
            assert!(matches!(err, BackendError::AccessDenied(_)), "{err:?}");
        }
        let token = xml("InvalidClientTokenId");
        let rejected = both(
            403,
            &[XML, ("X-Amzn-ErrorType", "InvalidClientTokenId")],
            &token,
        )
        .await;
        for err in rejected {
            assert!(matches!(err, BackendError::Credentials(_)), "{err:?}");
        }
    }

    /// Without a code the SDK could parse, only the status counts; a code in the body is not
    /// looked for.
    #[tokio::test]
    async fn without_a_code_the_status_decides() {
        let body = "<Error><Code>AccessDenied</Code><Message>hunter2</Message></Error>";
        for (status, class) in [
            (400, "error"),
            (401, "credentials"),
            (403, "access denied"),
            (429, "throttled"),
            (500, "no answer"),
            (503, "no answer"),
        ] {
            for err in both(status, &[XML], body).await {
                assert_eq!(err.kind(), class, "HTTP {status}: {err:?}");
                assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
            }
        }
    }

    #[tokio::test]
    async fn no_connection_is_unavailable_and_failing_credentials_are_credentials() {
        // A port that was free a moment ago: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("a", "b", None, None, "t"),
                ),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        let calls = Arc::new(ApiCalls::paced(0));
        let err = SsmBackend::new(&config, calls.clone(), true, &[])
            .get("/app/x")
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");

        #[derive(Debug)]
        struct Failing;
        impl aws_credential_types::provider::ProvideCredentials for Failing {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                    CredentialsError::not_loaded("no profile"),
                ))
            }
        }
        let config = config
            .into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(Failing),
            )
            .build();
        let err = SsmBackend::new(&config, calls, true, &[])
            .get("/app/x")
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Credentials(_)), "{err:?}");
    }
}
