//! The remote store behind the mount, as a trait: one page of `GetParametersByPath` and one
//! `GetParameter`, the two calls the filesystem core is built from.
//!
//! Implementations: [`ssm::SsmBackend`] (the AWS SDK) and [`memory::MemoryBackend`] (a map that
//! counts calls and injects faults, for unit tests). The core does the paging itself so that it
//! can stop early when one page answers its question.
//!
//! Promises: errors carry AWS's error code and message, never a parameter value.

use std::future::Future;
use std::time::SystemTime;

use crate::content::{Content, ParamType};

pub mod memory;
pub mod ssm;

/// One parameter as fetched, with its value rendered to file content.
#[derive(Debug)]
pub struct Param {
    /// Full SSM name, e.g. `/app/db/password`.
    pub name: String,
    pub kind: ParamType,
    pub content: Content,
    pub version: i64,
    pub last_modified: SystemTime,
    pub arn: String,
    pub data_type: String,
}

/// One page of a listing. A page may be empty and still carry a token: keep paging until there
/// is none.
#[derive(Debug, Default)]
pub struct Page {
    pub params: Vec<Param>,
    pub next_token: Option<String>,
}

/// What went wrong talking to AWS. Classified so that the core can decide between serving the
/// last good values (transient) and reporting the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("throttled by AWS: {0}")]
    Throttled(String),
    #[error("AWS credentials were rejected or are missing: {0}")]
    Credentials(String),
    #[error("AWS did not answer: {0}")]
    Unavailable(String),
    #[error("AWS error: {0}")]
    Other(String),
}

impl BackendError {
    /// Errors that may go away by themselves (outage, throttling, credentials that failed to
    /// renew): the last good values are served meanwhile.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Throttled(_)
                | BackendError::Unavailable(_)
                | BackendError::Credentials(_)
        )
    }
}

/// The API calls ssmfs makes, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    GetParametersByPath,
    GetParameter,
}

impl Op {
    pub const ALL: [Op; 2] = [Op::GetParametersByPath, Op::GetParameter];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::GetParametersByPath => "GetParametersByPath",
            Op::GetParameter => "GetParameter",
        }
    }
}

/// A source of parameters. `path` is an SSM hierarchy path (`/app`, or `/` for all).
pub trait Backend: Send + Sync + 'static {
    /// One page of `GetParametersByPath(path, recursive)`, at most 10 parameters.
    fn get_parameters_by_path(
        &self,
        path: &str,
        recursive: bool,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<Page, BackendError>> + Send;

    /// `GetParameter(name)`; `Ok(None)` when the parameter does not exist.
    fn get_parameter(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Param>, BackendError>> + Send;
}
