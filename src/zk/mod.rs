//! Everything ZooKeeper: the layout `pfs` writes ([`layout`]), the typed view of it ([`view`]),
//! and the one task that owns the session and keeps the view current ([`mirror`]).

pub mod layout;
pub mod mirror;
pub mod view;

pub use layout::{ClusterLayout, StoreId, StoreNode, TrayField, TrayUuid};
pub use mirror::{
    Health, LivenessProbe, Mirror, MirrorConfig, ProbeError, SessionStatus, Snapshot, ViewEvent,
};
pub use view::{ClusterView, DataError, Field, Problem, StoreView, TrayView};
