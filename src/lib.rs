//! ssmfs: AWS SSM Parameter Store mounted as a cached, read-only filesystem.
//!
//! Layers, from the kernel down: [`fuse`] (the fuser adapter) → [`fs`] (the filesystem core:
//! paths, inodes, freshness) over [`fs::tree`] (what is known, and since when) → [`backend`] (the
//! AWS API behind a trait, with an in-memory implementation for tests); [`kernel`] sends the
//! kernel its invalidations off the request path. [`mount`] wires them together for the binary;
//! [`docker`] is its Docker volume driver, which makes each volume's mount an ssmfs process.

pub mod backend;
pub mod batch;
pub mod capped;
pub mod content;
pub mod digest;
pub mod docker;
pub mod error;
pub mod events;
pub mod filter;
pub mod flight;
pub mod fs;
pub mod fuse;
pub mod json;
pub mod kernel;
pub mod metrics;
pub mod mount;
pub mod names;
pub mod render;
pub mod stats;
pub mod sync;
