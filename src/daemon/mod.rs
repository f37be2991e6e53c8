//! The daemon: the process that serves a mount (`process`).

pub mod process;
