//! davdrive: mount a WebDAV share as a local folder, with a write-through disk cache and
//! a durable sync journal that carries every change to the remote, outages included.

pub mod backoff;
pub mod backup;
pub mod cache;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fs;
pub mod fuse;
pub mod health;
pub mod jobs;
pub mod journal;
pub mod metrics;
pub mod migrate;
pub mod mount_helper;
pub mod remote;
pub mod serve;
pub mod serve_props;
pub mod store;
