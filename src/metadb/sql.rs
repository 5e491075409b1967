//! All SQL the operator runs, written once for both backends (SQLite and MariaDB/MySQL accept
//! the same statements here: `?` placeholders, PureFlash's column types).

use std::marker::PhantomData;

use sqlx::error::BoxDynError;
use sqlx::{
    Database, Decode, Encode, Executor, FromRow, IntoArguments, QueryBuilder, Type, TypeInfo,
    ValueRef,
};

use crate::metadb::DbError;
use crate::metadb::plan::Plan;
use crate::metadb::rows::{DbRows, PortKey, PortRow, StoreRow, TrayRow, vacated_mngt_ip};

/// PureFlash's definitions of the three tables (design.md §3), created only where missing.
/// The same text is valid SQLite and MariaDB; on MariaDB the foreign key is enforced.
/// `if not exists` still matters: two operators starting on an empty DB may both create.
pub const CREATE_TABLES: [(&str, &str); 3] = [
    (
        "t_store",
        "create table if not exists t_store(
            id integer primary key,
            name varchar(96),
            sn varchar(128),
            model varchar(128),
            mngt_ip varchar(32) unique not null,
            status varchar(16) not null)",
    ),
    (
        "t_tray",
        "create table if not exists t_tray(
            uuid varchar(64) primary key,
            device varchar(96) not null,
            status varchar(16) not null,
            raw_capacity bigint not null,
            object_size bigint not null,
            store_id integer not null,
            foreign key (store_id) references t_store(id))",
    ),
    (
        "t_port",
        "create table if not exists t_port(
            ip_addr varchar(16),
            store_id int,
            purpose int,
            status varchar(16) not null,
            primary key(ip_addr, purpose))",
    ),
];

const SELECT_STORES: &str = "select id, mngt_ip, status from t_store";
const SELECT_TRAYS: &str =
    "select uuid, device, status, raw_capacity, object_size, store_id from t_tray";
const SELECT_PORTS: &str = "select ip_addr, purpose, store_id, status from t_port";

/// Rows per multi-row INSERT or `IN (…)` list; well under SQLite's and MySQL's placeholder limits.
const CHUNK: usize = 500;
/// Rows per UPDATE or DELETE of rows that each need their own values (`case <key> when …`):
/// a row costs up to a dozen placeholders. One statement per row would be one round trip per
/// row, and a plan that re-homes thousands of trays and ports would not commit within a
/// pass's timeout on a DB a few milliseconds away, holding every liveness change back with it.
const ROWS_PER_STATEMENT: usize = 200;

type StoreTuple = (i64, Cell<String>, Cell<String>);
type TrayTuple = (
    Cell<Option<String>>,
    Cell<String>,
    Cell<String>,
    Cell<i64>,
    Cell<i64>,
    Cell<i64>,
);
type PortTuple = (
    Cell<Option<String>>,
    Cell<Option<i64>>,
    Cell<Option<i64>>,
    Cell<String>,
);

/// What an unreadable text cell reads as: no address, device or status the sync writes.
const UNREADABLE_TEXT: &str = "\u{fffd}";
/// What an unreadable integer cell reads as: no size or store id the sync writes.
const UNREADABLE_INTEGER: i64 = -1;

/// One cell of a row read back, whatever another writer left in it.
///
/// SQLite types values, not columns: another tool's `insert … values ('abc')` into an integer
/// column keeps the text, and text need not be UTF-8. Read strictly, one such cell fails the
/// read of its whole table, and with it every pass, for good. A cell that does not decode as
/// `T` is [`Cell::Unreadable`] instead: a row whose key is unreadable cannot be addressed and is
/// skipped like a NULL key; any other unreadable cell reads as a value the sync never writes, so
/// the plan rewrites it where ZooKeeper says what it should be.
///
/// On MariaDB the column's type decides every value's, so a cell that does not decode means a
/// column of another type than PureFlash's (`int unsigned`, `varbinary`): there it stays an
/// error that names the column. Skipped, a key of such a column would be inserted again by the
/// plan and refused as a duplicate every pass, and other cells rewritten every re-read.
/// A NULL where PureFlash's schema says NOT NULL is a value, not a type: unreadable on both.
#[derive(Debug)]
pub enum Cell<T> {
    Read(T),
    Unreadable,
}

impl<T> Cell<T> {
    fn or(self, unreadable: T, count: &mut usize) -> T {
        match self {
            Cell::Read(value) => value,
            Cell::Unreadable => {
                *count += 1;
                unreadable
            }
        }
    }

    fn text(self, count: &mut usize) -> T
    where
        T: From<&'static str>,
    {
        self.or(T::from(UNREADABLE_TEXT), count)
    }
}

impl<T> Cell<Option<T>> {
    /// A key: `None` when NULL or unreadable, the row then cannot be addressed.
    fn key(self, count: &mut usize) -> Option<T> {
        self.or(None, count)
    }
}

impl<DB: Database, T: Type<DB>> Type<DB> for Cell<T> {
    fn type_info() -> DB::TypeInfo {
        T::type_info()
    }

    fn compatible(_: &DB::TypeInfo) -> bool {
        true
    }
}

/// Whether NULL is a value of the type: only `Option`s take it.
pub trait Nullable {
    const TAKES_NULL: bool;
}

impl Nullable for String {
    const TAKES_NULL: bool = false;
}

impl Nullable for i64 {
    const TAKES_NULL: bool = false;
}

impl<T> Nullable for Option<T> {
    const TAKES_NULL: bool = true;
}

impl<'r, DB: Dialect, T: Decode<'r, DB> + Type<DB> + Nullable> Decode<'r, DB> for Cell<T> {
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        // A NULL in a column PureFlash's schema makes NOT NULL (a table another tool made
        // without it) is no value the sync writes, on either backend: rewritten where
        // ZooKeeper says what it should be. Decoded, SQLite would read it as "" or 0, which
        // may equal what ZooKeeper says and leave it NULL for ever; MariaDB would fail the
        // read of the whole table, every pass.
        if value.is_null() && !T::TAKES_NULL {
            return Ok(Cell::Unreadable);
        }
        // The check `Row::try_get` makes, answered with `Unreadable` where values are typed
        // one by one.
        if !value.is_null() {
            let found = value.type_info();
            if !found.is_null() && !T::compatible(&found) {
                if !DB::VALUES_TYPED_PER_CELL {
                    return Err(format!(
                        "the column's type is {}, where PureFlash's schema has {}",
                        found.name(),
                        T::type_info().name()
                    )
                    .into());
                }
                return Ok(Cell::Unreadable);
            }
        }
        match T::decode(value) {
            Ok(value) => Ok(Cell::Read(value)),
            Err(_) if DB::VALUES_TYPED_PER_CELL => Ok(Cell::Unreadable),
            Err(error) => Err(error),
        }
    }
}

/// The statements, generic over the backend. The bounds say: connections execute queries,
/// our row tuples decode, and our values bind.
pub struct Sql<DB>(PhantomData<DB>);

impl<DB> Sql<DB>
where
    DB: Database + Dialect + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    for<'r> StoreTuple: FromRow<'r, DB::Row>,
    for<'r> TrayTuple: FromRow<'r, DB::Row>,
    for<'r> PortTuple: FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    /// Creates whichever of the three tables is missing, then checks that each has the columns
    /// the operator uses (a table of the same name with other columns is an error, not altered).
    ///
    /// Tables that exist are not created again, not even with `if not exists`: MariaDB checks
    /// the CREATE privilege before it looks for the table, so a least-privilege account (select,
    /// insert, update, delete on jconductor's database) would fail every pass with ERROR 1142.
    pub async fn ensure_schema(conn: &mut DB::Connection) -> Result<(), DbError> {
        let existing: Vec<(String,)> = sqlx::query_as(DB::EXISTING_TABLES)
            .fetch_all(&mut *conn)
            .await
            .map_err(|source| DbError::Schema {
                table: "t_store/t_tray/t_port",
                source,
            })?;
        for (table, ddl) in CREATE_TABLES {
            if existing
                .iter()
                .any(|(name,)| name.eq_ignore_ascii_case(table))
            {
                continue;
            }
            sqlx::query(ddl)
                .execute(&mut *conn)
                .await
                .map_err(|source| DbError::Schema { table, source })?;
        }
        for (table, select) in [
            ("t_store", SELECT_STORES),
            ("t_tray", SELECT_TRAYS),
            ("t_port", SELECT_PORTS),
        ] {
            let probe = format!("{select} where 1 = 0");
            sqlx::query(sqlx::AssertSqlSafe(probe))
                .execute(&mut *conn)
                .await
                .map_err(|source| DbError::Schema { table, source })?;
        }
        Ok(())
    }

    /// Reads the three tables whole. Cells another writer filled with what the columns should
    /// not hold are read as [`Cell`] says, and counted.
    pub async fn load(conn: &mut DB::Connection) -> Result<(DbRows, UnreadableCells), DbError> {
        let load = |table| move |source| DbError::Load { table, source };
        let mut rows = DbRows::default();
        let mut unreadable = UnreadableCells::default();
        let stores: Vec<StoreTuple> = sqlx::query_as(SELECT_STORES)
            .fetch_all(&mut *conn)
            .await
            .map_err(load("t_store"))?;
        let count = &mut unreadable.t_store;
        for (id, mngt_ip, status) in stores {
            let mngt_ip = mngt_ip.text(count);
            let status = status.text(count);
            rows.stores.insert(id, StoreRow { mngt_ip, status });
        }
        let trays: Vec<TrayTuple> = sqlx::query_as(SELECT_TRAYS)
            .fetch_all(&mut *conn)
            .await
            .map_err(load("t_tray"))?;
        let count = &mut unreadable.t_tray;
        // SQLite lets primary-key columns hold NULL; such rows cannot be addressed and are skipped.
        for (uuid, device, status, raw_capacity, object_size, store_id) in trays {
            let Some(uuid) = uuid.key(count) else {
                continue;
            };
            let row = TrayRow {
                device: device.text(count),
                status: status.text(count),
                raw_capacity: raw_capacity.or(UNREADABLE_INTEGER, count),
                object_size: object_size.or(UNREADABLE_INTEGER, count),
                store_id: store_id.or(UNREADABLE_INTEGER, count),
            };
            rows.trays.insert(uuid, row);
        }
        let ports: Vec<PortTuple> = sqlx::query_as(SELECT_PORTS)
            .fetch_all(&mut *conn)
            .await
            .map_err(load("t_port"))?;
        let count = &mut unreadable.t_port;
        for (ip_addr, purpose, store_id, status) in ports {
            let (Some(ip_addr), Some(purpose)) = (ip_addr.key(count), purpose.key(count)) else {
                continue;
            };
            let row = PortRow {
                store_id: store_id.or(Some(UNREADABLE_INTEGER), count),
                status: status.text(count),
            };
            rows.ports.insert(PortKey { ip_addr, purpose }, row);
        }
        Ok((rows, unreadable))
    }

    /// Runs `plan` on `conn` (inside the caller's transaction), in the plan's order. Returns
    /// whether every statement matched the rows it expected; when not, the caller's picture of
    /// the DB was stale.
    pub async fn apply(conn: &mut DB::Connection, plan: &Plan) -> Result<bool, DbError> {
        let mut matched = true;
        let write = |step| move |source| DbError::Apply { step, source };

        // Each vacated address names its row, so no two rows of a statement collide.
        for chunk in plan.store_vacates.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new("update t_store set");
            Self::push_store_case(
                &mut query,
                "mngt_ip",
                chunk.iter().map(|&id| (id, vacated_mngt_ip(id))),
            );
            Self::push_where_ids(&mut query, chunk.iter().copied());
            let done = query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("vacate t_store.mngt_ip"))?;
            matched &= DB::rows_affected(&done) == chunk.len() as u64;
        }
        let (status_only, with_ip): (Vec<_>, Vec<_>) =
            plan.store_updates.iter().partition(|u| u.mngt_ip.is_none());
        // The databases check the unique index row by row, in an order of their choosing: the
        // plan has set aside every row whose address another row takes, so no target is held
        // by anyone when this runs, and any order goes through.
        for chunk in with_ip.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new("update t_store set");
            Self::push_store_case(
                &mut query,
                "mngt_ip",
                chunk
                    .iter()
                    .map(|u| (u.id, u.mngt_ip.clone().unwrap_or_default())),
            );
            if chunk.iter().any(|u| u.status.is_some()) {
                query.push(",");
                Self::push_store_case(
                    &mut query,
                    "status",
                    chunk
                        .iter()
                        .filter_map(|u| u.status.map(|status| (u.id, status.to_owned()))),
                );
            }
            Self::push_where_ids(&mut query, chunk.iter().map(|u| u.id));
            let done = query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("update t_store"))?;
            matched &= DB::rows_affected(&done) == chunk.len() as u64;
        }
        for status in [crate::metadb::STATUS_OK, crate::metadb::STATUS_OFFLINE] {
            let ids: Vec<i64> = status_only
                .iter()
                .filter(|u| u.status == Some(status))
                .map(|u| u.id)
                .collect();
            matched &= Self::set_status(
                conn,
                ("t_store", "update t_store status"),
                "id",
                status,
                &ids,
            )
            .await?;
        }
        for chunk in plan.store_inserts.chunks(CHUNK) {
            let mut query = QueryBuilder::<DB>::new("insert into t_store (id, mngt_ip, status) ");
            query.push_values(chunk, |mut row, (id, store)| {
                row.push_bind(*id)
                    .push_bind(store.mngt_ip.clone())
                    .push_bind(store.status.clone());
            });
            query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("insert t_store"))?;
        }

        let (status_only, other): (Vec<_>, Vec<_>) = plan.tray_updates.iter().partition(|u| {
            u.device.is_none()
                && u.raw_capacity.is_none()
                && u.object_size.is_none()
                && u.store_id.is_none()
        });
        for chunk in other.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new("update t_tray set ");
            // One `case` per column some row of the chunk changes; the others keep theirs.
            let mut set = query.separated(", ");
            macro_rules! column {
                ($name:literal, $field:ident) => {
                    if chunk.iter().any(|u| u.$field.is_some()) {
                        set.push(concat!($name, " = case uuid"));
                        for update in chunk {
                            if let Some(value) = &update.$field {
                                set.push_unseparated(" when ")
                                    .push_bind_unseparated(update.uuid.clone())
                                    .push_unseparated(" then ")
                                    .push_bind_unseparated(value.clone());
                            }
                        }
                        set.push_unseparated(concat!(" else ", $name, " end"));
                    }
                };
            }
            column!("device", device);
            column!("status", status);
            column!("raw_capacity", raw_capacity);
            column!("object_size", object_size);
            column!("store_id", store_id);
            query.push(" where uuid in (");
            let mut uuids = query.separated(", ");
            for update in chunk {
                uuids.push_bind(update.uuid.clone());
            }
            query.push(")");
            let done = query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("update t_tray"))?;
            matched &= DB::rows_affected(&done) == chunk.len() as u64;
        }
        for status in [crate::metadb::STATUS_OK, crate::metadb::STATUS_OFFLINE] {
            let uuids: Vec<String> = status_only
                .iter()
                .filter(|u| u.status == Some(status))
                .map(|u| u.uuid.clone())
                .collect();
            matched &= Self::set_status(
                conn,
                ("t_tray", "update t_tray status"),
                "uuid",
                status,
                &uuids,
            )
            .await?;
        }
        for chunk in plan.tray_inserts.chunks(CHUNK) {
            let mut query = QueryBuilder::<DB>::new(
                "insert into t_tray (uuid, device, status, raw_capacity, object_size, store_id) ",
            );
            query.push_values(chunk, |mut row, (uuid, tray)| {
                row.push_bind(uuid.clone())
                    .push_bind(tray.device.clone())
                    .push_bind(tray.status.clone())
                    .push_bind(tray.raw_capacity)
                    .push_bind(tray.object_size)
                    .push_bind(tray.store_id);
            });
            query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("insert t_tray"))?;
        }

        for chunk in plan.port_deletes.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new("delete from t_port where ");
            Self::push_port_keys(&mut query, chunk.iter());
            let done = query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("delete t_port"))?;
            matched &= DB::rows_affected(&done) == chunk.len() as u64;
        }
        for chunk in plan.port_updates.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new("update t_port set store_id = case");
            for (key, port) in chunk {
                Self::push_port_key(query.push(" when "), key);
                query.push(" then ").push_bind(port.store_id);
            }
            query.push(" else store_id end, status = case");
            for (key, port) in chunk {
                Self::push_port_key(query.push(" when "), key);
                query.push(" then ").push_bind(port.status.clone());
            }
            query.push(" else status end where ");
            Self::push_port_keys(&mut query, chunk.iter().map(|(key, _)| key));
            let done = query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("update t_port"))?;
            matched &= DB::rows_affected(&done) == chunk.len() as u64;
        }
        for chunk in plan.port_inserts.chunks(CHUNK) {
            let mut query =
                QueryBuilder::<DB>::new("insert into t_port (ip_addr, store_id, purpose, status) ");
            query.push_values(chunk, |mut row, (key, port)| {
                row.push_bind(key.ip_addr.clone())
                    .push_bind(port.store_id)
                    .push_bind(key.purpose)
                    .push_bind(port.status.clone());
            });
            query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write("insert t_port"))?;
        }
        Ok(matched)
    }

    /// ` <column> = case id when ? then ? … else <column> end`: t_store rows, each its own value.
    fn push_store_case(
        query: &mut QueryBuilder<DB>,
        column: &str,
        rows: impl Iterator<Item = (i64, String)>,
    ) {
        query.push(" ").push(column).push(" = case id");
        for (id, value) in rows {
            query
                .push(" when ")
                .push_bind(id)
                .push(" then ")
                .push_bind(value);
        }
        query.push(" else ").push(column).push(" end");
    }

    /// ` where id in (?, …)`.
    fn push_where_ids(query: &mut QueryBuilder<DB>, ids: impl Iterator<Item = i64>) {
        query.push(" where id in (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        query.push(")");
    }

    /// `(ip_addr = ? and purpose = ?)`: a t_port row's key.
    fn push_port_key(query: &mut QueryBuilder<DB>, key: &PortKey) {
        query
            .push("(ip_addr = ")
            .push_bind(key.ip_addr.clone())
            .push(" and purpose = ")
            .push_bind(key.purpose)
            .push(")");
    }

    /// `(…) or (…)`: any of these t_port keys. (Row values, `(ip_addr, purpose) in (…)`, are
    /// spelt differently by SQLite and MySQL.)
    fn push_port_keys<'k>(query: &mut QueryBuilder<DB>, keys: impl Iterator<Item = &'k PortKey>) {
        for (i, key) in keys.enumerate() {
            if i > 0 {
                query.push(" or ");
            }
            Self::push_port_key(query, key);
        }
    }

    /// `update <table> set status = ? where <key> in (…)`, chunked; returns whether every key
    /// matched a row.
    /// `step` names the statement in errors (`update t_store status`).
    async fn set_status<K>(
        conn: &mut DB::Connection,
        (table, step): (&'static str, &'static str),
        key: &str,
        status: &'static str,
        keys: &[K],
    ) -> Result<bool, DbError>
    where
        K: Clone + Send + Sync,
        for<'q> K: Encode<'q, DB> + Type<DB>,
    {
        let mut matched = true;
        for chunk in keys.chunks(CHUNK) {
            let mut query = QueryBuilder::<DB>::new(format!("update {table} set status = "));
            query.push_bind(status).push(format!(" where {key} in ("));
            let mut list = query.separated(", ");
            for k in chunk {
                list.push_bind(k.clone());
            }
            query.push(")");
            let done = query
                .build()
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(|source| DbError::Apply { step, source })?;
            matched &= DB::rows_affected(&done) == chunk.len() as u64;
        }
        Ok(matched)
    }
}

/// What differs between the backends: result types and catalogs.
/// Cells per table that [`Cell`] found unreadable in one read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnreadableCells {
    pub t_store: usize,
    pub t_tray: usize,
    pub t_port: usize,
}

impl UnreadableCells {
    pub fn any(&self) -> bool {
        *self != UnreadableCells::default()
    }
}

pub trait Dialect: Database {
    /// Which of t_store, t_tray and t_port exist. A view of that name counts too: it is not
    /// ours to replace, and the column probe that follows decides whether it is usable.
    const EXISTING_TABLES: &'static str;

    /// Whether a cell's type is its own rather than its column's (see [`Cell`]).
    const VALUES_TYPED_PER_CELL: bool;

    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Dialect for sqlx::Sqlite {
    const EXISTING_TABLES: &'static str = "select name from sqlite_master \
         where type in ('table', 'view') and name in ('t_store', 't_tray', 't_port')";
    const VALUES_TYPED_PER_CELL: bool = true;

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for sqlx::MySql {
    // information_schema lists only what the account may use, which is what matters here.
    // `cast` because some servers report the name as binary.
    const EXISTING_TABLES: &'static str = "select cast(table_name as char) \
         from information_schema.tables \
         where table_schema = database() and table_name in ('t_store', 't_tray', 't_port')";
    const VALUES_TYPED_PER_CELL: bool = false;

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
