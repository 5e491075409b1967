//! The typed, in-memory picture of a cluster's `stores/` tree: one [`StoreView`] per store.
//!
//! Pure code: the mirror feeds it node changes ([`ClusterView::apply`]) or whole reloads
//! ([`ClusterView::from_nodes`]); everyone else only reads it. Bad data never fails an update:
//! it is kept as a [`DataError`] in the field it belongs to (or in the store's list of unexpected
//! nodes) and reported by [`StoreView::problems`], while every other field stays usable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::zk::layout::{StoreId, StoreNode, TrayField, TrayUuid};

/// What is wrong with a node or its data, per node, so one bad node never hides the rest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DataError {
    #[error(
        "{value:?} is not a store id (expected a positive decimal integer without leading zeros, at most 2147483647)"
    )]
    BadStoreId { value: String },
    #[error("{value:?} is not a tray uuid in the 8-4-4-4-12 form")]
    BadTrayUuid { value: String },
    #[error("{value:?} is not an IP address")]
    BadIp { value: String },
    #[error("{value:?} is not a decimal number of bytes")]
    NotANumber { value: String },
    #[error("{value} bytes does not fit a signed 64-bit column")]
    TooLarge { value: u64 },
    #[error("data is not UTF-8 text")]
    NotText,
    #[error("data is empty")]
    Empty,
    #[error("pfs does not write such a node")]
    UnexpectedNode,
    #[error("a persistent node where pfs creates an ephemeral one: no proof of a live session")]
    NotEphemeral,
}

/// The longest part of a bad value an error keeps, in characters.
const EXCERPT_CHARS: usize = 64;

/// A bad value as an error keeps it: whole if short, else its start and its size. Node data
/// can be up to a megabyte, and an error is cloned with the view and logged.
pub(crate) fn excerpt(value: &str) -> String {
    match value.char_indices().nth(EXCERPT_CHARS) {
        None => value.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &value[..cut], value.len()),
    }
}

/// One data node's value: not there (yet), parsed, or present but unreadable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Field<T> {
    #[default]
    Missing,
    Valid(T),
    Invalid(DataError),
}

impl<T> Field<T> {
    pub fn valid(&self) -> Option<&T> {
        match self {
            Field::Valid(value) => Some(value),
            _ => None,
        }
    }

    fn error(&self) -> Option<&DataError> {
        match self {
            Field::Invalid(error) => Some(error),
            _ => None,
        }
    }
}

impl<T> From<Result<T, DataError>> for Field<T> {
    fn from(result: Result<T, DataError>) -> Self {
        match result {
            Ok(value) => Field::Valid(value),
            Err(error) => Field::Invalid(error),
        }
    }
}

/// One disk of a store, as registered under `trays/<uuid>/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrayView {
    pub devname: Field<String>,
    pub capacity: Field<u64>,
    pub object_size: Field<u64>,
    pub free_size: Field<u64>,
    pub state: Field<String>,
    /// The ephemeral `online` node exists.
    pub online: bool,
}

impl TrayView {
    fn field(&mut self, field: TrayField, data: Option<&[u8]>) -> bool {
        fn put<T: PartialEq>(slot: &mut Field<T>, value: Field<T>) -> bool {
            let changed = *slot != value;
            *slot = value;
            changed
        }
        match field {
            TrayField::Devname => put(
                &mut self.devname,
                data.map_or(Field::Missing, |d| parse_text(d).into()),
            ),
            TrayField::Capacity => put(
                &mut self.capacity,
                data.map_or(Field::Missing, |d| parse_size(d).into()),
            ),
            TrayField::ObjectSize => put(
                &mut self.object_size,
                data.map_or(Field::Missing, |d| parse_size(d).into()),
            ),
            TrayField::FreeSize => put(
                &mut self.free_size,
                data.map_or(Field::Missing, |d| parse_size(d).into()),
            ),
            // pfs creates it without data (and writes none later): empty is its usual value.
            TrayField::State => put(
                &mut self.state,
                data.map_or(Field::Missing, |d| parse_text_or_empty(d).into()),
            ),
        }
    }
}

/// Everything ZooKeeper says about one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreView {
    pub id: StoreId,
    pub mngt_ip: Field<IpAddr>,
    pub state: Field<String>,
    /// The ephemeral `alive` node exists: the `pfs` process holds a live session.
    pub alive: bool,
    /// The ZooKeeper session that owns `alive` (its `ephemeralOwner`), when known. A `pfs`
    /// restarted while its old session lingers finds `alive` still standing for the old one:
    /// a new owner is what proves the new process registered.
    pub alive_session: Option<i64>,
    pub trays: BTreeMap<TrayUuid, TrayView>,
    pub ports: BTreeSet<IpAddr>,
    pub rep_ports: BTreeSet<IpAddr>,
    /// Nodes `pfs` never writes (or writes under a name that does not parse), by relative path.
    pub unexpected: BTreeMap<String, DataError>,
    /// Why the store's state is not known, though the rest of the cluster's is: ZooKeeper
    /// refused to read one of its nodes (an ACL, most likely) since it was last read in full.
    /// Its other fields keep what was read before (and any change read since), which nothing
    /// may be decided on.
    pub unreadable: Option<String>,
}

/// A problem found in one store's data, for logs and status.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Path relative to the store directory.
    pub path: String,
    pub error: DataError,
}

/// Whether a node's `ephemeralOwner` is a session, as ZooKeeper reads it: 0 is a persistent
/// node and `i64::MIN` a container. Any other value is a session, negative ones included: a
/// session id starts with its server's id, and one from a server with an id of 128 or more
/// reads negative as an `i64`. (A TTL node's owner, `0xFF` then its TTL, looks like a session
/// of server 255, which is allowed unless extended types are enabled: taken for a session. A
/// TTL `alive` made by a tool goes by itself; a live pfs taken for dead would be restarted.)
pub fn owned_by_a_session(owner: i64) -> bool {
    owner != 0 && owner != i64::MIN
}

impl StoreView {
    pub fn new(id: StoreId) -> Self {
        StoreView {
            id,
            mngt_ip: Field::Missing,
            state: Field::Missing,
            alive: false,
            alive_session: None,
            trays: BTreeMap::new(),
            ports: BTreeSet::new(),
            rep_ports: BTreeSet::new(),
            unexpected: BTreeMap::new(),
            unreadable: None,
        }
    }

    /// A store ZooKeeper refused (part of) to read; `reason` names the node.
    pub fn unreadable(id: StoreId, reason: String) -> Self {
        StoreView {
            unreadable: Some(reason),
            ..StoreView::new(id)
        }
    }

    /// Whether what the view holds of the store is its state: no node of it was refused.
    pub fn is_known(&self) -> bool {
        self.unreadable.is_none()
    }

    /// Records that the node at `rel` exists with `data`. Returns whether anything changed.
    pub fn set(&mut self, rel: &str, data: &[u8]) -> bool {
        self.update(rel, Some(data))
    }

    /// Records that the ephemeral node at `rel` exists, owned by `session`. Only `alive`'s
    /// owner is kept. Returns whether anything changed.
    ///
    /// An `alive` without a session owning it (see [`owned_by_a_session`]) is not ephemeral,
    /// but left by a tool or a person (`create …/alive` in zkCli): it outlives every pfs, so
    /// it proves nothing, and taken for liveness it would keep the store alive for good. The
    /// store is not alive, and the node is reported. Likewise a tray's `online`: the tray is
    /// not online.
    pub fn set_ephemeral(&mut self, rel: &str, session: i64) -> bool {
        let ephemeral = owned_by_a_session(session);
        match StoreNode::parse(rel) {
            Ok(StoreNode::Alive) => {
                let before = (self.alive, self.alive_session);
                self.alive = ephemeral;
                self.alive_session = ephemeral.then_some(session);
                self.report_persistent(rel, !ephemeral)
                    || before != (self.alive, self.alive_session)
            }
            Ok(StoreNode::TrayOnline(uuid)) => {
                let tray = self.trays.entry(uuid).or_default();
                let changed = std::mem::replace(&mut tray.online, ephemeral) != ephemeral;
                self.report_persistent(rel, !ephemeral) || changed
            }
            _ => self.update(rel, Some(&[])),
        }
    }

    /// Reports the node at `rel` as persistent where pfs makes an ephemeral one, or clears
    /// that report. Returns whether the report changed.
    fn report_persistent(&mut self, rel: &str, persistent: bool) -> bool {
        if persistent {
            self.unexpected
                .insert(rel.to_owned(), DataError::NotEphemeral)
                .is_none()
        } else {
            self.unexpected.remove(rel).is_some()
        }
    }

    /// Whether the node at `rel` was last found persistent: no proof until its owner is read
    /// again.
    fn found_persistent(&self, rel: &str) -> bool {
        self.unexpected.get(rel) == Some(&DataError::NotEphemeral)
    }

    /// Records that the node at `rel` (and so everything below it) is gone.
    pub fn remove(&mut self, rel: &str) -> bool {
        let before = self.unexpected.len();
        self.unexpected.remove(rel);
        // Only the keys below `rel`, found in order: a `deleteall` of many unexpected nodes
        // sends an event for each, and a scan of them all per event would be quadratic.
        let below = format!("{rel}/");
        let gone: Vec<String> = self
            .unexpected
            .range(below.clone()..)
            .take_while(|(path, _)| path.starts_with(&below))
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            self.unexpected.remove(&path);
        }
        self.update(rel, None) | (before != self.unexpected.len())
    }

    fn update(&mut self, rel: &str, data: Option<&[u8]>) -> bool {
        let present = data.is_some();
        if present && !listed_by_full_load(rel) {
            return false;
        }
        let node = match StoreNode::parse(rel) {
            Ok(node) => node,
            Err(error) => {
                return match data {
                    Some(_) => self.unexpected.insert(rel.to_owned(), error.clone()) != Some(error),
                    None => false,
                };
            }
        };
        fn flag(slot: &mut bool, value: bool) -> bool {
            std::mem::replace(slot, value) != value
        }
        fn member(set: &mut BTreeSet<IpAddr>, ip: IpAddr, present: bool) -> bool {
            if present {
                set.insert(ip)
            } else {
                set.remove(&ip)
            }
        }
        match node {
            StoreNode::Root => false,
            StoreNode::MngtIp => {
                let value = data.map_or(Field::Missing, |d| {
                    parse_text(d).and_then(|t| parse_ip(&t)).into()
                });
                let changed = self.mngt_ip != value;
                self.mngt_ip = value;
                changed
            }
            StoreNode::State => {
                let value = data.map_or(Field::Missing, |d| parse_text(d).into());
                let changed = self.state != value;
                self.state = value;
                changed
            }
            StoreNode::Alive => {
                // Present without an owner: whose session it is is not known (any more). A
                // node found persistent stays no proof of life until its owner is read again
                // (its data changed, say): it would otherwise flip alive for a moment.
                let owner_known = self.alive_session.take().is_some();
                let alive = present && !self.found_persistent(rel);
                flag(&mut self.alive, alive) | owner_known
            }
            StoreNode::Trays if present => false,
            StoreNode::Trays => {
                let changed = !self.trays.is_empty();
                self.trays.clear();
                changed
            }
            StoreNode::Tray(uuid) if present => {
                let absent = !self.trays.contains_key(&uuid);
                self.trays.entry(uuid).or_default();
                absent
            }
            StoreNode::Tray(uuid) => self.trays.remove(&uuid).is_some(),
            StoreNode::TrayField(uuid, field) => match (self.trays.get_mut(&uuid), present) {
                (Some(tray), _) => tray.field(field, data),
                (None, true) => self.trays.entry(uuid).or_default().field(field, data),
                (None, false) => false,
            },
            StoreNode::TrayOnline(uuid) => {
                let online = present && !self.found_persistent(rel);
                match (self.trays.get_mut(&uuid), present) {
                    (Some(tray), _) => flag(&mut tray.online, online),
                    (None, true) => {
                        self.trays.entry(uuid).or_default().online = online;
                        true
                    }
                    (None, false) => false,
                }
            }
            StoreNode::Ports if present => false,
            StoreNode::Ports => {
                let changed = !self.ports.is_empty();
                self.ports.clear();
                changed
            }
            StoreNode::Port(ip) => member(&mut self.ports, ip, present),
            StoreNode::RepPorts if present => false,
            StoreNode::RepPorts => {
                let changed = !self.rep_ports.is_empty();
                self.rep_ports.clear();
                changed
            }
            StoreNode::RepPort(ip) => member(&mut self.rep_ports, ip, present),
        }
    }

    /// Every piece of data that could not be understood, with where it is.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        // Paths are made only for the fields in error: this runs for every changed store at
        // every publish, and a store may list thousands of trays.
        let mut push = |path: &dyn Fn() -> String, error: Option<&DataError>| {
            if let Some(error) = error {
                problems.push(Problem {
                    path: path(),
                    error: error.clone(),
                });
            }
        };
        push(&|| "mngt_ip".into(), self.mngt_ip.error());
        push(&|| "state".into(), self.state.error());
        for (uuid, tray) in &self.trays {
            let fields = [
                ("devname", tray.devname.error()),
                ("capacity", tray.capacity.error()),
                ("object_size", tray.object_size.error()),
                ("free_size", tray.free_size.error()),
                ("state", tray.state.error()),
            ];
            for (field, error) in fields {
                push(&|| format!("trays/{uuid}/{field}"), error);
            }
        }
        for (path, error) in &self.unexpected {
            push(&|| path.clone(), Some(error));
        }
        problems
    }

    /// Number of trays whose `online` node exists.
    pub fn trays_online(&self) -> usize {
        self.trays.values().filter(|t| t.online).count()
    }
}

/// Whether a full reload sees this node. It lists the children of the store directory, of
/// `trays/`, of each tray (a child of `trays/` that names no tray is not looked into) and of
/// `ports/` and `rep_ports/`, and nothing deeper; the event path ignores the nodes it does not
/// see too, so both paths build the same view and a resync finds no false drift.
fn listed_by_full_load(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        [_] | ["trays" | "ports" | "rep_ports", _] => true,
        ["trays", tray, _] => StoreNode::parse(&format!("trays/{tray}")).is_ok(),
        _ => false,
    }
}

/// Node data as text: UTF-8, surrounding whitespace and C string terminators removed.
fn parse_text(data: &[u8]) -> Result<String, DataError> {
    let text = std::str::from_utf8(data).map_err(|_| DataError::NotText)?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if text.is_empty() {
        Err(DataError::Empty)
    } else {
        Ok(text.to_owned())
    }
}

/// Node data as text, as [`parse_text`], where no text at all is a value too.
fn parse_text_or_empty(data: &[u8]) -> Result<String, DataError> {
    match parse_text(data) {
        Err(DataError::Empty) => Ok(String::new()),
        parsed => parsed,
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, DataError> {
    text.parse().map_err(|_| DataError::BadIp {
        value: excerpt(text),
    })
}

/// A byte count as `pfs` writes it: plain decimal. It must fit the DB's signed `bigint`.
fn parse_size(data: &[u8]) -> Result<u64, DataError> {
    let text = parse_text(data)?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DataError::NotANumber {
            value: excerpt(&text),
        });
    }
    let value: u64 = text.parse().map_err(|_| DataError::NotANumber {
        value: excerpt(&text),
    })?;
    if value > i64::MAX as u64 {
        return Err(DataError::TooLarge { value });
    }
    Ok(value)
}

/// A change to one node under `stores/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeUpdate<'a> {
    /// The node exists; its data (empty for nodes whose data means nothing).
    Present(&'a [u8]),
    /// The ephemeral node exists, owned by this ZooKeeper session (its `ephemeralOwner`).
    Ephemeral(i64),
    Deleted,
}

/// What a [`ClusterView::apply`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    Nothing,
    Store(StoreId),
    /// A store directory whose name is not a store id appeared or went, or `stores/` itself.
    Directories,
}

/// All stores of one cluster. Cheap to clone: stores are shared until modified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub stores: BTreeMap<StoreId, Arc<StoreView>>,
    /// Directories under `stores/` whose name is not a store id (e.g. `x1`): reported, not
    /// synced. Shared between views until changed: a script that left thousands of them must
    /// not make every snapshot copy them.
    pub malformed_dirs: Arc<BTreeMap<String, DataError>>,
    /// `/pureflash/<cluster>/stores` exists. When it does not, the cluster name may well be
    /// wrong, so an empty view says nothing about the stores (writers must not act on it).
    pub stores_dir: bool,
}

impl ClusterView {
    /// Records whether `/pureflash/<cluster>/stores` exists.
    pub fn set_stores_dir(&mut self, exists: bool) -> Touched {
        if std::mem::replace(&mut self.stores_dir, exists) == exists {
            Touched::Nothing
        } else {
            Touched::Directories
        }
    }

    /// Applies one node change inside store directory `dir`.
    pub fn apply(&mut self, dir: &str, rel: &str, update: NodeUpdate<'_>) -> Touched {
        if update != NodeUpdate::Deleted {
            self.stores_dir = true; // a child implies its parent
        }
        let id = match dir.parse::<StoreId>() {
            Ok(id) => id,
            Err(error) => {
                // Only the directory itself counts; what lies below a malformed one is ignored.
                let changed = match (rel.is_empty(), update) {
                    (true, NodeUpdate::Deleted) => {
                        self.malformed_dirs.contains_key(dir)
                            && Arc::make_mut(&mut self.malformed_dirs)
                                .remove(dir)
                                .is_some()
                    }
                    (true, _) => {
                        !self.malformed_dirs.contains_key(dir)
                            && Arc::make_mut(&mut self.malformed_dirs)
                                .insert(dir.to_owned(), error)
                                .is_none()
                    }
                    (false, _) => false,
                };
                return if changed {
                    Touched::Directories
                } else {
                    Touched::Nothing
                };
            }
        };
        let changed = match update {
            NodeUpdate::Deleted if rel.is_empty() => self.stores.remove(&id).is_some(),
            NodeUpdate::Deleted => match self.stores.get_mut(&id) {
                Some(store) => Arc::make_mut(store).remove(rel),
                None => false,
            },
            NodeUpdate::Present(_) | NodeUpdate::Ephemeral(_) => {
                let mut created = false;
                let store = self.stores.entry(id).or_insert_with(|| {
                    created = true;
                    Arc::new(StoreView::new(id))
                });
                let store = Arc::make_mut(store);
                created
                    | match update {
                        NodeUpdate::Ephemeral(session) => store.set_ephemeral(rel, session),
                        NodeUpdate::Present(data) => store.set(rel, data),
                        NodeUpdate::Deleted => unreachable!("matched above"),
                    }
            }
        };
        if changed {
            Touched::Store(id)
        } else {
            Touched::Nothing
        }
    }

    /// Builds a view from a complete listing of `(store dir, relative path, data)`.
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>) -> Self {
        let mut view = ClusterView::default();
        for (dir, rel, data) in nodes {
            view.apply(dir, rel, NodeUpdate::Present(data));
        }
        view
    }

    /// Replaces this view by `fresh`, keeping the existing `Arc` of every store that did not
    /// change (so readers can compare by pointer). Returns the ids that were added, changed or
    /// removed, and whether the malformed directories or the existence of `stores/` changed.
    ///
    /// A store `fresh` could not read keeps what this view holds of it, marked unreadable: a
    /// refusal says nothing about the store's state.
    pub fn replace_with(&mut self, mut fresh: ClusterView) -> (Vec<StoreId>, bool) {
        let mut changed = Vec::new();
        for (id, store) in fresh.stores.iter_mut() {
            if let (Some(refused), Some(old)) = (&store.unreadable, self.stores.get(id)) {
                let refused = refused.clone();
                *store = Arc::clone(old);
                if store.unreadable.as_ref() != Some(&refused) {
                    Arc::make_mut(store).unreadable = Some(refused);
                }
            }
            match self.stores.get(id) {
                Some(old) if old == store => *store = Arc::clone(old),
                _ => changed.push(*id),
            }
        }
        changed.extend(
            self.stores
                .keys()
                .filter(|id| !fresh.stores.contains_key(id)),
        );
        changed.sort_unstable();
        let dirs_changed =
            self.malformed_dirs != fresh.malformed_dirs || self.stores_dir != fresh.stores_dir;
        *self = fresh;
        (changed, dirs_changed)
    }

    /// Ids whose store differs between `older` and this view (added, changed or removed).
    pub fn changed_since(&self, older: &ClusterView) -> Vec<StoreId> {
        let mut ids: Vec<StoreId> = self
            .stores
            .iter()
            .filter(|(id, store)| {
                older
                    .stores
                    .get(id)
                    .is_none_or(|old| !Arc::ptr_eq(old, store) && old != *store)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.extend(
            older
                .stores
                .keys()
                .filter(|id| !self.stores.contains_key(id)),
        );
        ids.sort_unstable();
        ids
    }

    pub fn get(&self, id: StoreId) -> Option<&StoreView> {
        self.stores.get(&id).map(|s| s.as_ref())
    }

    /// Stores known to be alive (an unreadable store's last reading does not count).
    pub fn alive_count(&self) -> usize {
        self.stores
            .values()
            .filter(|s| s.alive && s.is_known())
            .count()
    }

    /// Records that ZooKeeper refused to read a node of store `id` (see
    /// [`StoreView::unreadable`]); the first refusal's `reason` stands until the store is read
    /// in full again.
    pub fn mark_unreadable(&mut self, id: StoreId, reason: String) -> Touched {
        match self.stores.get_mut(&id) {
            Some(store) if store.unreadable.is_some() => return Touched::Nothing,
            Some(store) => Arc::make_mut(store).unreadable = Some(reason),
            None => {
                self.stores
                    .insert(id, Arc::new(StoreView::unreadable(id, reason)));
            }
        }
        Touched::Store(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";
    const U2: &str = "00000000-0000-4000-8000-000000000002";

    fn id(n: u32) -> StoreId {
        StoreId::new(n).unwrap()
    }

    /// A complete, healthy store as `pfs` registers it.
    fn registered_store(n: u32) -> Vec<(String, String, Vec<u8>)> {
        let dir = n.to_string();
        let mut nodes = vec![
            ("", b"".as_slice()),
            ("mngt_ip", b"10.0.0.7"),
            ("state", b"OK"),
            ("alive", b""),
            ("trays", b""),
            ("ports", b""),
            ("ports/10.0.1.7", b""),
            ("rep_ports", b""),
            ("rep_ports/10.0.2.7", b""),
        ]
        .into_iter()
        .map(|(rel, data)| (dir.clone(), rel.to_owned(), data.to_vec()))
        .collect::<Vec<_>>();
        for (rel, data) in [
            (format!("trays/{U1}"), b"".as_slice()),
            (format!("trays/{U1}/devname"), b"/dev/nvme1n1"),
            (format!("trays/{U1}/capacity"), b"1000204886016"),
            (format!("trays/{U1}/object_size"), b"67108864"),
            (format!("trays/{U1}/free_size"), b"999000000000"),
            // As pfs writes it: no data.
            (format!("trays/{U1}/state"), b""),
            (format!("trays/{U1}/online"), b""),
        ] {
            nodes.push((dir.clone(), rel, data.to_vec()));
        }
        nodes
    }

    fn view_of(nodes: &[(String, String, Vec<u8>)]) -> ClusterView {
        ClusterView::from_nodes(
            nodes
                .iter()
                .map(|(d, r, v)| (d.as_str(), r.as_str(), v.as_slice())),
        )
    }

    #[test]
    fn a_registered_store_parses_into_typed_values() {
        let view = view_of(&registered_store(7));
        let store = view.get(id(7)).unwrap();
        assert_eq!(store.mngt_ip, Field::Valid("10.0.0.7".parse().unwrap()));
        assert_eq!(store.state, Field::Valid("OK".into()));
        assert!(store.alive);
        assert_eq!(store.ports, BTreeSet::from(["10.0.1.7".parse().unwrap()]));
        assert_eq!(
            store.rep_ports,
            BTreeSet::from(["10.0.2.7".parse().unwrap()])
        );
        let tray = &store.trays[&U1.parse().unwrap()];
        assert_eq!(tray.devname, Field::Valid("/dev/nvme1n1".into()));
        assert_eq!(tray.capacity, Field::Valid(1000204886016));
        assert_eq!(tray.object_size, Field::Valid(67108864));
        assert_eq!(tray.free_size, Field::Valid(999000000000));
        assert_eq!(tray.state, Field::Valid(String::new()));
        assert!(tray.online);
        assert!(store.problems().is_empty());
    }

    #[test]
    fn malformed_data_is_reported_per_field_and_spares_the_rest() {
        let mut nodes = registered_store(3);
        nodes.extend(registered_store(4));
        for (dir, rel, data) in nodes.iter_mut() {
            if dir == "3" && rel.ends_with("/capacity") {
                *data = b"abc".to_vec();
            }
        }
        nodes.push(("x1".into(), "".into(), vec![]));
        nodes.push(("x1".into(), "mngt_ip".into(), b"10.9.9.9".to_vec()));
        nodes.push(("3".into(), "surprise".into(), vec![]));
        nodes.push(("3".into(), "trays/not-a-uuid".into(), vec![]));
        nodes.push((
            "3".into(),
            "trays/not-a-uuid/capacity".into(),
            b"1".to_vec(),
        ));
        let view = view_of(&nodes);

        assert_eq!(view.malformed_dirs.keys().collect::<Vec<_>>(), ["x1"]);
        assert!(view.get(id(4)).unwrap().problems().is_empty());
        let bad = view.get(id(3)).unwrap();
        assert!(bad.alive, "a bad tray does not hide the store's liveness");
        assert_eq!(bad.mngt_ip, Field::Valid("10.0.0.7".parse().unwrap()));
        let tray = &bad.trays[&U1.parse().unwrap()];
        assert_eq!(
            tray.capacity,
            Field::Invalid(DataError::NotANumber {
                value: "abc".into()
            })
        );
        assert_eq!(tray.devname, Field::Valid("/dev/nvme1n1".into()));
        let problems: Vec<(String, DataError)> = bad
            .problems()
            .into_iter()
            .map(|p| (p.path, p.error))
            .collect();
        assert_eq!(
            problems,
            vec![
                (
                    format!("trays/{U1}/capacity"),
                    DataError::NotANumber {
                        value: "abc".into()
                    }
                ),
                ("surprise".into(), DataError::UnexpectedNode),
                // What is below it is not read (see `nothing_below_a_junk_tray_is_taken`).
                (
                    "trays/not-a-uuid".into(),
                    DataError::BadTrayUuid {
                        value: "not-a-uuid".into()
                    }
                ),
            ]
        );
    }

    #[test]
    fn node_data_parsing() {
        assert_eq!(parse_size(b"42"), Ok(42));
        assert_eq!(
            parse_size(b" 42\n\0"),
            Ok(42),
            "C writers may leave a terminator"
        );
        assert_eq!(
            parse_size(b"-1"),
            Err(DataError::NotANumber { value: "-1".into() })
        );
        assert_eq!(
            parse_size(b"1e9"),
            Err(DataError::NotANumber {
                value: "1e9".into()
            })
        );
        assert_eq!(parse_size(b""), Err(DataError::Empty));
        assert_eq!(parse_size(b"\xff"), Err(DataError::NotText));
        assert_eq!(parse_size(b"9223372036854775807"), Ok(i64::MAX as u64));
        assert_eq!(
            parse_size(b"9223372036854775808"),
            Err(DataError::TooLarge {
                value: 9223372036854775808
            })
        );
        assert_eq!(
            parse_size(b"99999999999999999999"),
            Err(DataError::NotANumber {
                value: "99999999999999999999".into()
            })
        );
        // A megabyte of junk is reported by its start and size, not copied whole.
        let junk = format!("x{}", "é".repeat(1 << 19));
        let Err(DataError::NotANumber { value }) = parse_size(junk.as_bytes()) else {
            panic!("junk parsed");
        };
        assert_eq!(
            value,
            format!("x{}… ({} bytes in all)", "é".repeat(63), junk.len())
        );
        assert_eq!(parse_ip("10.0.0.1"), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(
            parse_ip("010.0.0.1"),
            Err(DataError::BadIp {
                value: "010.0.0.1".into()
            })
        );
    }

    #[test]
    fn alive_remembers_which_session_owns_it() {
        let mut view = view_of(&registered_store(5));
        let owner = |view: &ClusterView| view.get(id(5)).unwrap().alive_session;
        assert_eq!(owner(&view), None, "listed without a stat: owner unknown");
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Ephemeral(0x51)),
            Touched::Store(id(5)),
            "learning the owner is a change"
        );
        assert_eq!(owner(&view), Some(0x51));
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Ephemeral(0x51)),
            Touched::Nothing,
            "idempotent"
        );
        // A pfs restarted after its old session expired registers under a new one.
        view.apply("5", "alive", NodeUpdate::Deleted);
        assert_eq!(owner(&view), None);
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Ephemeral(0x52)),
            Touched::Store(id(5))
        );
        assert_eq!(owner(&view), Some(0x52));
        assert!(view.get(id(5)).unwrap().alive);
        // Seen again without a stat, the owner is no longer known.
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Present(b"")),
            Touched::Store(id(5))
        );
        assert_eq!(owner(&view), None);
        // Only alive has an owner worth keeping; other ephemeral nodes are just there.
        let tray_online = format!("trays/{U1}/online");
        view.apply("5", &tray_online, NodeUpdate::Deleted);
        assert_eq!(
            view.apply("5", &tray_online, NodeUpdate::Ephemeral(0x52)),
            Touched::Store(id(5))
        );
        assert_eq!(view.get(id(5)).unwrap().trays_online(), 1);
        assert_eq!(owner(&view), None);
        // A store first seen through its alive node exists from then on.
        assert_eq!(
            view.apply("9", "alive", NodeUpdate::Ephemeral(0x60)),
            Touched::Store(id(9))
        );
        assert_eq!(view.get(id(9)).unwrap().alive_session, Some(0x60));
    }

    /// An `alive` someone created as a persistent node outlives every pfs: it is no proof of
    /// life, and is reported until a pfs's own ephemeral one replaces it.
    #[test]
    fn a_persistent_alive_node_is_reported_not_taken_for_liveness() {
        let mut view = view_of(&registered_store(5));
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Ephemeral(0)),
            Touched::Store(id(5))
        );
        let store = view.get(id(5)).unwrap();
        assert!(!store.alive);
        assert_eq!(store.alive_session, None);
        assert_eq!(
            store.problems(),
            [Problem {
                path: "alive".into(),
                error: DataError::NotEphemeral
            }]
        );
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Ephemeral(0)),
            Touched::Nothing,
            "idempotent"
        );
        // Its data changed: seen present before its owner is read again, still no proof.
        view.apply("5", "alive", NodeUpdate::Present(b"x"));
        assert!(!view.get(id(5)).unwrap().alive);
        view.apply("5", "alive", NodeUpdate::Deleted);
        assert_eq!(view.get(id(5)).unwrap().problems(), []);
        // A container or TTL node: no session either.
        view.apply("5", "alive", NodeUpdate::Ephemeral(i64::MIN));
        assert!(!view.get(id(5)).unwrap().alive);
        view.apply("5", "alive", NodeUpdate::Deleted);
        view.apply("5", "alive", NodeUpdate::Ephemeral(0));
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Ephemeral(0x51)),
            Touched::Store(id(5))
        );
        let store = view.get(id(5)).unwrap();
        assert!(store.alive);
        assert_eq!(store.problems(), []);
    }

    /// A session id starts with its server's id: from a server with an id of 128 or more it
    /// reads negative, and is a session all the same.
    #[test]
    fn a_session_from_a_server_with_a_high_id_is_a_session() {
        let session_of = |server: u64| ((server << 56) | 0x0001_2345_6789_0000) as i64;
        assert!(session_of(201) < 0);
        assert!(owned_by_a_session(session_of(201)));
        assert!(owned_by_a_session(session_of(254)));
        assert!(owned_by_a_session(session_of(1)));
        assert!(!owned_by_a_session(0));
        assert!(!owned_by_a_session(i64::MIN), "a container");
        assert!(
            owned_by_a_session(session_of(255)),
            "server 255's, or a TTL node's"
        );
        let mut view = view_of(&registered_store(5));
        view.apply("5", "alive", NodeUpdate::Ephemeral(session_of(201)));
        let store = view.get(id(5)).unwrap();
        assert!(store.alive);
        assert_eq!(store.alive_session, Some(session_of(201)));
        assert_eq!(store.problems(), []);
    }

    /// So does a tray's `online`: the tray is not online while only such a node says so.
    #[test]
    fn a_persistent_tray_online_node_is_reported_not_taken_for_online() {
        let mut view = view_of(&registered_store(5));
        let online = format!("trays/{U1}/online");
        let tray_online = |view: &ClusterView| view.get(id(5)).unwrap().trays_online();
        assert_eq!(tray_online(&view), 1, "listed: online");
        assert_eq!(
            view.apply("5", &online, NodeUpdate::Ephemeral(0)),
            Touched::Store(id(5))
        );
        assert_eq!(tray_online(&view), 0);
        assert_eq!(
            view.get(id(5)).unwrap().problems(),
            [Problem {
                path: online.clone(),
                error: DataError::NotEphemeral
            }]
        );
        assert_eq!(
            view.apply("5", &online, NodeUpdate::Ephemeral(0)),
            Touched::Nothing
        );
        // Its data changed: still no proof until its owner is read again.
        view.apply("5", &online, NodeUpdate::Present(b"x"));
        assert_eq!(tray_online(&view), 0);
        // Replaced by pfs's own: online, nothing reported.
        view.apply("5", &online, NodeUpdate::Deleted);
        assert_eq!(view.get(id(5)).unwrap().problems(), []);
        view.apply("5", &online, NodeUpdate::Present(b""));
        assert_eq!(
            view.apply("5", &online, NodeUpdate::Ephemeral(0x51)),
            Touched::Nothing,
            "seen present already"
        );
        assert_eq!(tray_online(&view), 1);
    }

    #[test]
    fn incremental_updates_follow_every_transition() {
        let mut view = view_of(&registered_store(5));
        let tray_online = format!("trays/{U1}/online");
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Deleted),
            Touched::Store(id(5))
        );
        assert!(!view.get(id(5)).unwrap().alive);
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Deleted),
            Touched::Nothing,
            "idempotent"
        );
        assert_eq!(
            view.apply("5", "alive", NodeUpdate::Present(b"")),
            Touched::Store(id(5))
        );
        assert!(view.get(id(5)).unwrap().alive);

        assert_eq!(
            view.apply("5", &tray_online, NodeUpdate::Deleted),
            Touched::Store(id(5))
        );
        assert_eq!(view.get(id(5)).unwrap().trays_online(), 0);
        assert_eq!(
            view.apply("5", &tray_online, NodeUpdate::Present(b"")),
            Touched::Store(id(5))
        );
        assert_eq!(view.get(id(5)).unwrap().trays_online(), 1);

        let free = format!("trays/{U1}/free_size");
        assert_eq!(
            view.apply("5", &free, NodeUpdate::Present(b"999000000000")),
            Touched::Nothing
        );
        assert_eq!(
            view.apply("5", &free, NodeUpdate::Present(b"5")),
            Touched::Store(id(5))
        );
        assert_eq!(
            view.get(id(5)).unwrap().trays[&U1.parse().unwrap()].free_size,
            Field::Valid(5)
        );

        view.apply("5", &format!("trays/{U2}/online"), NodeUpdate::Present(b""));
        assert_eq!(view.get(id(5)).unwrap().trays.len(), 2);
        view.apply("5", "trays", NodeUpdate::Deleted);
        assert!(view.get(id(5)).unwrap().trays.is_empty());

        view.apply("5", "ports/10.0.1.7", NodeUpdate::Deleted);
        assert!(view.get(id(5)).unwrap().ports.is_empty());

        view.apply("5", "odd", NodeUpdate::Present(b""));
        assert_eq!(
            view.apply("5", "odd/child", NodeUpdate::Present(b"")),
            Touched::Nothing,
            "not listed by a reload"
        );
        assert_eq!(view.get(id(5)).unwrap().problems().len(), 1);
        assert_eq!(
            view.apply("5", "odd", NodeUpdate::Deleted),
            Touched::Store(id(5))
        );
        assert!(
            view.get(id(5)).unwrap().problems().is_empty(),
            "a deleted subtree takes its problems along"
        );

        assert_eq!(
            view.apply("5", "", NodeUpdate::Deleted),
            Touched::Store(id(5))
        );
        assert!(view.stores.is_empty());
    }

    #[test]
    fn the_stores_directory_is_tracked() {
        let mut view = ClusterView::default();
        assert!(!view.stores_dir);
        assert_eq!(view.set_stores_dir(true), Touched::Directories);
        assert_eq!(view.set_stores_dir(true), Touched::Nothing);
        assert_eq!(view.set_stores_dir(false), Touched::Directories);
        view.apply("3", "alive", NodeUpdate::Present(b""));
        assert!(view.stores_dir, "a store implies the directory");
        assert!(view_of(&registered_store(1)).stores_dir);
    }

    /// What is below a child of `trays/` that names no tray is not read by a full reload, and
    /// not taken from events either: both paths report the junk node alone.
    #[test]
    fn nothing_below_a_junk_tray_is_taken() {
        let mut view = ClusterView::default();
        view.apply("5", "alive", NodeUpdate::Present(b""));
        assert_eq!(
            view.apply("5", "trays/junk", NodeUpdate::Present(b"")),
            Touched::Store(StoreId::new(5).unwrap())
        );
        for below in ["trays/junk/devname", "trays/junk/online"] {
            assert_eq!(
                view.apply("5", below, NodeUpdate::Present(b"/dev/sdb")),
                Touched::Nothing
            );
        }
        let store = &view.stores[&StoreId::new(5).unwrap()];
        assert_eq!(store.unexpected.keys().collect::<Vec<_>>(), ["trays/junk"]);
    }

    #[test]
    fn malformed_dirs_come_and_go() {
        let mut view = ClusterView::default();
        assert_eq!(
            view.apply("x1", "", NodeUpdate::Present(b"")),
            Touched::Directories
        );
        assert_eq!(
            view.apply("x1", "alive", NodeUpdate::Present(b"")),
            Touched::Nothing
        );
        assert_eq!(
            view.apply("x1", "", NodeUpdate::Deleted),
            Touched::Directories
        );
        assert!(view.malformed_dirs.is_empty());
    }

    #[test]
    fn replace_keeps_unchanged_stores_shared_and_lists_the_rest() {
        let mut nodes = registered_store(1);
        nodes.extend(registered_store(2));
        nodes.extend(registered_store(3));
        let mut view = view_of(&nodes);
        let before = view.clone();

        let mut fresh_nodes: Vec<_> = nodes
            .into_iter()
            .filter(|(d, r, _)| !(d == "2" && r == "alive"))
            .collect();
        fresh_nodes.retain(|(d, _, _)| d != "3");
        fresh_nodes.extend(registered_store(4));
        let (changed, malformed_changed) = view.replace_with(view_of(&fresh_nodes));

        assert_eq!(changed, vec![id(2), id(3), id(4)]);
        assert!(!malformed_changed);
        assert!(Arc::ptr_eq(&view.stores[&id(1)], &before.stores[&id(1)]));
        assert_eq!(view.changed_since(&before), vec![id(2), id(3), id(4)]);
        assert_eq!(view.changed_since(&view.clone()), Vec::<StoreId>::new());
    }

    /// A store ZooKeeper refuses to read keeps what was read of it before, marked so; one
    /// never read is only a marker. Reading it in full again clears the mark.
    #[test]
    fn a_refused_store_keeps_its_last_reading_marked_unreadable() {
        let mut nodes = registered_store(1);
        nodes.extend(registered_store(2));
        let mut view = view_of(&nodes);
        let read = view.stores[&id(2)].clone();

        let refused = || {
            let mut fresh = view_of(&registered_store(1));
            for n in [2, 3] {
                fresh.stores.insert(
                    id(n),
                    Arc::new(StoreView::unreadable(id(n), format!("store {n} refused"))),
                );
            }
            fresh
        };
        let (changed, _) = view.replace_with(refused());
        assert_eq!(changed, vec![id(2), id(3)]);
        let kept = view.get(id(2)).unwrap();
        assert!(kept.alive, "the last reading stands");
        assert_eq!(kept.mngt_ip, read.mngt_ip);
        assert_eq!(kept.unreadable.as_deref(), Some("store 2 refused"));
        let never = view.get(id(3)).unwrap();
        assert!(!never.is_known() && !never.alive);
        assert_eq!(view.alive_count(), 1, "only what is known counts");

        // Refused again: nothing changes, and what was never read stays so.
        let before = view.clone();
        let (changed, _) = view.replace_with(refused());
        assert_eq!(changed, Vec::<StoreId>::new());
        assert!(Arc::ptr_eq(&view.stores[&id(2)], &before.stores[&id(2)]));
        // A change read from an event in between is kept too (it is fresher than the
        // reading), and the store is still unknown.
        view.apply("3", "alive", NodeUpdate::Ephemeral(7));
        view.replace_with(refused());
        let store_3 = view.get(id(3)).unwrap();
        assert!(store_3.alive && !store_3.is_known());

        // Read in full again.
        let (changed, _) = view.replace_with(view_of(&nodes));
        assert_eq!(changed, vec![id(2), id(3)]);
        assert!(view.get(id(2)).unwrap().is_known());
        assert!(view.get(id(3)).is_none());
    }

    #[test]
    fn a_refused_reread_marks_only_its_store() {
        let mut view = view_of(&registered_store(1));
        assert_eq!(
            view.mark_unreadable(id(1), "first".into()),
            Touched::Store(id(1))
        );
        assert_eq!(
            view.mark_unreadable(id(1), "second".into()),
            Touched::Nothing,
            "the first refusal stands"
        );
        let store = view.get(id(1)).unwrap();
        assert!(store.alive);
        assert_eq!(store.unreadable.as_deref(), Some("first"));
        assert_eq!(
            view.mark_unreadable(id(4), "new".into()),
            Touched::Store(id(4))
        );
        assert!(!view.get(id(4)).unwrap().is_known());
        // Its directory deleted: gone, mark and all.
        view.apply("4", "", NodeUpdate::Deleted);
        assert!(view.get(id(4)).is_none());
    }
}
