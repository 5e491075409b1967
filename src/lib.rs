//! pureflash-operator: runs and heals PureFlash storage clusters.
//!
//! Crate map, in the order data flows:
//! - [`zk`]: the ZooKeeper layout `pfs` writes, the typed cluster view, and the mirror task that
//!   owns the session and keeps the view current (the only place that talks to ZooKeeper).
//! - [`metadb`]: the PureFlash metadata DB (t_store, t_tray, t_port): the pure diff from view to
//!   rows and the one module that owns the SQL pool (the only place that talks SQL).
//! - [`dbsync`]: the loop that keeps the DB equal to the view, event by event and periodically.
//! - [`cli`]: the command line; `main.rs` only parses it and runs the chosen command.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod crd;
pub mod dbsync;
pub mod leader;
pub mod metadb;
pub mod metrics;
pub mod recovery;
pub mod rollout;
pub mod run_command;
pub mod sync_command;
pub mod zk;

#[cfg(test)]
mod fixtures;

/// Why a command failed; each variant's message is the one line users see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Layout(#[from] zk::layout::LayoutError),
    #[error(transparent)]
    DbUrl(#[from] metadb::BadDbUrl),
    #[error(transparent)]
    ZooKeeper(#[from] zk::mirror::MirrorError),
    #[error(transparent)]
    Db(#[from] metadb::DbError),
    #[error(
        "ZooKeeper at {zk} has no {path}: is the cluster name right? (the metadata DB was not touched)"
    )]
    NoStoresDirectory { zk: String, path: String },
    #[error("{0}")]
    Kube(String),
    #[error(
        "the PureFlashStore CRD is not installed: run `kubectl apply -f crds/pureflashstore.yaml` (or `pureflash-operator crd | kubectl apply -f -`)"
    )]
    CrdMissing,
    #[error("{0}")]
    Usage(String),
    #[error("{0}; exiting, so that another replica (or this one, restarted) takes over")]
    Stopped(String),
    #[error("the ZooKeeper mirror failed: {0}")]
    MirrorFailed(String),
    #[error("stopped by a signal before anything was written")]
    Interrupted,
    #[error(
        "stopped by a signal after writing what the summary shows, before the metadata DB matched ZooKeeper; run again"
    )]
    InterruptedAfterWriting,
    #[error(
        "the metadata DB kept changing under the sync (another writer?): its rows did not match {0} reads in a row (the rows that did match were written); run again"
    )]
    DbKeptChanging(usize),
}
