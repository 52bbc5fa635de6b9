//! The filesystem's error: each variant maps to one errno. Messages are lowercase and never hold
//! a parameter value.

use crate::backend::BackendError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("is a directory")]
    IsDir,
    /// A rendered file (`.env`, `.json`, a template) could not be made; the log says why.
    #[error("rendering failed")]
    Render,
    #[error("{0}")]
    Backend(#[from] BackendError),
}

impl Error {
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::ReadOnly => libc::EROFS,
            Error::IsDir => libc::EISDIR,
            Error::Render => libc::EIO,
            Error::Backend(BackendError::AccessDenied(_)) => libc::EACCES,
            Error::Backend(_) => libc::EIO,
        }
    }
}
