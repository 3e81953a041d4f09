//! Hosts' rows, normalised and interned per query: each distinct normalised row
//! is stored once, and each host holds only row ids. Builders can run in
//! parallel and be merged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use diffy_core::report::QueryFailure;
use diffy_core::vantage::{Unseen, Vantage};
use diffy_core::{HostStatus, QueryStatus, Row};
use rustc_hash::{FxHashMap, FxHasher};

use crate::profile::{ColumnRole, HostNames, Profile};

/// The longest column value analysed whole (64 KiB). A longer one (a host
/// printing 200 MB in a command line) is kept as its first KiB, its length
/// and its SHA-256: two different long values stay different, and nothing
/// downstream (keys, explanations, reports) grows with what a host chose to
/// print. The raw output keeps every byte.
pub(crate) const MAX_VALUE: usize = 64 * 1024;

/// `value`, or its capped form when it is longer than [`MAX_VALUE`].
pub(crate) fn cap_value(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_VALUE {
        return Cow::Borrowed(value);
    }
    let mut head = 1024;
    while !value.is_char_boundary(head) {
        head -= 1;
    }
    Cow::Owned(format!(
        "{}… [{} bytes in all, sha256 {}]",
        &value[..head],
        value.len(),
        diffy_core::result::sha256_hex(value.as_bytes())
    ))
}

const COL_SEP: char = '\u{1f}';
const PAIR_SEP: char = '\u{1e}';

/// Profiles by query name, with a fallback for names the payload does not know.
#[derive(Debug, Default)]
pub(crate) struct Profiles {
    by_name: FxHashMap<String, Profile>,
}

impl Profiles {
    pub(crate) fn new(profiles: impl IntoIterator<Item = Profile>) -> Self {
        Self { by_name: profiles.into_iter().map(|p| (p.name.clone(), p)).collect() }
    }

    pub(crate) fn get(&self, name: &str) -> Profile {
        self.by_name.get(name).cloned().unwrap_or_else(|| Profile::by_name(name))
    }
}

/// One distinct normalised row of a query.
#[derive(Debug)]
pub(crate) struct RowInfo {
    /// The normalised key (`col US value RS ...`).
    pub key: Box<str>,
    /// Hash of the key, for history lookups.
    pub key_hash: u64,
    /// The row's identity id within its table.
    pub identity: u32,
    /// The row as first seen, all columns.
    pub original: Row,
    /// Hash of the first-seen row's compared columns, unnormalised.
    pub original_hash: u64,
    /// The survey host that first showed it (`u32::MAX`: none).
    pub first_host: u32,
}

impl RowInfo {
    /// The normalised row, as compared.
    pub(crate) fn normalised(&self) -> Row {
        self.key
            .split(PAIR_SEP)
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once(COL_SEP))
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect()
    }
}

/// All distinct rows of one query.
#[derive(Debug)]
pub(crate) struct QueryTable {
    pub name: String,
    pub profile: Profile,
    index: FxHashMap<Box<str>, u32>,
    identity_index: FxHashMap<Box<str>, u32>,
    pub rows: Vec<RowInfo>,
    pub identities: usize,
    plans: Plans,
}

impl QueryTable {
    fn new(profile: Profile) -> Self {
        Self {
            name: profile.name.clone(),
            profile,
            index: FxHashMap::default(),
            identity_index: FxHashMap::default(),
            rows: Vec::new(),
            identities: 0,
            plans: Plans::default(),
        }
    }

    fn intern_identity(&mut self, key: &str) -> u32 {
        if let Some(&id) = self.identity_index.get(key) {
            return id;
        }
        let id = self.identities as u32;
        self.identities += 1;
        self.identity_index.insert(key.into(), id);
        id
    }
}

/// For one sequence of column names: the compared columns in sorted order,
/// by position in the row, with their roles. Rows from one source repeat the
/// same columns in the same order, so a plan is found once and reused.
#[derive(Debug)]
struct Plan {
    columns: Vec<Box<str>>,
    /// Length and first 8 bytes of each column name, for a quick check.
    quick: Vec<(usize, u64)>,
    order: Vec<(usize, ColumnRole)>,
}

fn quick(name: &str) -> (usize, u64) {
    let b = name.as_bytes();
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    (b.len(), u64::from_le_bytes(w))
}

/// Plans of one query.
#[derive(Debug, Default)]
pub(crate) struct Plans {
    plans: Vec<Plan>,
    last: usize,
}

impl Plans {
    fn find<A: AsRef<str>, B>(&mut self, profile: &Profile, pairs: &[(A, B)]) -> usize {
        // Every name is checked (a row with other columns gets its own plan):
        // length and first 8 bytes as integers, the rest of long names as bytes.
        let same = |p: &Plan| {
            p.columns.len() == pairs.len()
                && p.quick.iter().zip(pairs).zip(&p.columns).all(|((q, (n, _)), c)| {
                    let n = n.as_ref();
                    *q == quick(n) && (n.len() <= 8 || n.as_bytes()[8..] == c.as_bytes()[8..])
                })
        };
        if self.plans.get(self.last).is_some_and(same) {
            return self.last;
        }
        if let Some(i) = self.plans.iter().position(same) {
            self.last = i;
            return i;
        }
        let mut order: Vec<(usize, ColumnRole)> = pairs
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (i, profile.role(c.as_ref())))
            .filter(|(_, r)| r.compared)
            .collect();
        order.sort_by(|a, b| pairs[a.0].0.as_ref().cmp(pairs[b.0].0.as_ref()));
        // A column named twice keeps its first value.
        order.dedup_by(|a, b| pairs[a.0].0.as_ref() == pairs[b.0].0.as_ref());
        self.plans.push(Plan {
            columns: pairs.iter().map(|(c, _)| c.as_ref().into()).collect(),
            quick: pairs.iter().map(|(c, _)| quick(c.as_ref())).collect(),
            order,
        });
        self.last = self.plans.len() - 1;
        self.last
    }
}

/// Scratch buffers reused across rows.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    key: String,
    identity: String,
}

pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

/// Normalises one row into `scratch.key` and `scratch.identity`; returns the
/// hash of the compared original values.
pub(crate) fn normalise_row<A: AsRef<str>, B: AsRef<str>>(
    profile: &Profile,
    plans: &mut Plans,
    pairs: &[(A, B)],
    host: &HostNames<'_>,
    scratch: &mut Scratch,
) -> u64 {
    scratch.key.clear();
    scratch.identity.clear();
    let plan = plans.find(profile, pairs);
    let mut orig = FxHasher::default();
    for &(i, role) in &plans.plans[plan].order {
        let (col, val) = (pairs[i].0.as_ref(), pairs[i].1.as_ref());
        col.hash(&mut orig);
        val.hash(&mut orig);
        let key = &mut scratch.key;
        key.push_str(col);
        key.push(COL_SEP);
        let start = key.len();
        // Values are not escaped: with the columns in a fixed order, a value
        // holding separators can only collide with another such value, never
        // with a row whose values have none.
        profile.normalise_with(col, role, val, host, key);
        key.push(PAIR_SEP);
        if role.identity {
            scratch.identity.push_str(&key[start - col.len() - 1..]);
        }
    }
    orig.finish()
}

/// Sorts a host's row ids and drops repeats (a host has a row or not).
pub(crate) fn finish_ids(ids: &mut Vec<(u32, u64)>) {
    ids.sort_unstable_by_key(|(r, _)| *r);
    ids.dedup_by_key(|(r, _)| *r);
}

/// Rows of one query on one host, or why there are none.
#[derive(Debug, Clone)]
pub(crate) enum HostQuery {
    /// Row ids with the hash of the host's own compared values, sorted by id.
    Rows(Vec<(u32, u64)>),
    /// No usable rows.
    Failed(QueryFailure),
}

/// One host of the survey or the baseline.
#[derive(Debug, Clone)]
pub(crate) struct HostEntry {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub status: HostStatus,
    pub message: Option<String>,
    /// (table index, rows).
    pub queries: Vec<(usize, HostQuery)>,
    /// How the host was collected, when it said.
    pub vantage: Option<Vantage>,
    /// Queries that could not read everything, by name.
    pub unseen: Vec<(String, Unseen)>,
}

impl HostEntry {
    pub(crate) fn rows(&self, table: usize) -> Option<&[(u32, u64)]> {
        self.queries.iter().find(|(t, _)| *t == table).and_then(|(_, q)| match q {
            HostQuery::Rows(r) => Some(r.as_slice()),
            HostQuery::Failed(_) => None,
        })
    }

    pub(crate) fn failures(&self) -> impl Iterator<Item = &QueryFailure> {
        self.queries.iter().filter_map(|(_, q)| match q {
            HostQuery::Failed(f) => Some(f),
            HostQuery::Rows(_) => None,
        })
    }

    /// Whether `query` could not read everything on this host.
    pub(crate) fn unseen_in(&self, query: &str) -> bool {
        self.unseen.iter().any(|(q, _)| q == query)
    }

    pub(crate) fn usable(&self) -> bool {
        self.status.is_collected() && self.queries.iter().any(|(_, q)| matches!(q, HostQuery::Rows(_)))
    }
}

/// Which set a host belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Survey,
    Baseline,
}

/// Collects hosts into interned tables.
#[derive(Debug)]
pub(crate) struct Builder {
    profiles: Arc<Profiles>,
    pub tables: Vec<QueryTable>,
    table_index: FxHashMap<String, usize>,
    pub survey: Vec<HostEntry>,
    pub baseline: Vec<HostEntry>,
    scratch: Scratch,
}

/// Adds one host's queries to a [`Builder`].
pub(crate) struct HostSink<'b> {
    builder: &'b mut Builder,
    entry: HostEntry,
    role: Role,
    names: (String, Option<String>),
}

impl Builder {
    pub(crate) fn new(profiles: Arc<Profiles>) -> Self {
        Self {
            profiles,
            tables: Vec::new(),
            table_index: FxHashMap::default(),
            survey: Vec::new(),
            baseline: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    pub(crate) fn table(&mut self, name: &str) -> usize {
        if let Some(&i) = self.table_index.get(name) {
            return i;
        }
        let i = self.tables.len();
        self.tables.push(QueryTable::new(self.profiles.get(name)));
        self.table_index.insert(name.to_string(), i);
        i
    }

    pub(crate) fn host(
        &mut self,
        role: Role,
        id: String,
        hostname: Option<String>,
        labels: BTreeMap<String, String>,
        status: HostStatus,
        message: Option<String>,
    ) -> HostSink<'_> {
        HostSink {
            names: (id.clone(), hostname),
            entry: HostEntry { id, labels, status, message, queries: Vec::new(), vantage: None, unseen: Vec::new() },
            builder: self,
            role,
        }
    }

    /// The index the next host of `role` will have among survey hosts
    /// (`u32::MAX` for baseline hosts, which have none).
    pub(crate) fn next_host_index(&self, role: Role) -> u32 {
        if role == Role::Survey { self.survey.len() as u32 } else { u32::MAX }
    }

    /// Interns one row of table `ti` seen on the host `host_index`; returns the
    /// row id and the hash of the host's own compared values.
    pub(crate) fn intern_row<A: AsRef<str>, B: AsRef<str>>(
        &mut self,
        ti: usize,
        names: &HostNames<'_>,
        host_index: u32,
        pairs: &[(A, B)],
    ) -> (u32, u64) {
        if pairs.iter().any(|(_, v)| v.as_ref().len() > MAX_VALUE) {
            let capped: Vec<(&str, Cow<'_, str>)> =
                pairs.iter().map(|(c, v)| (c.as_ref(), cap_value(v.as_ref()))).collect();
            return self.intern_row(ti, names, host_index, &capped);
        }
        let table = &mut self.tables[ti];
        let scratch = &mut self.scratch;
        let orig = normalise_row(&table.profile, &mut table.plans, pairs, names, scratch);
        if let Some(&id) = table.index.get(scratch.key.as_str()) {
            return (id, orig);
        }
        let identity_key = if table.profile.has_partial_identity() { &scratch.identity } else { &scratch.key };
        let identity = table.intern_identity(identity_key);
        let id = table.rows.len() as u32;
        table.index.insert(scratch.key.as_str().into(), id);
        table.rows.push(RowInfo {
            key: scratch.key.as_str().into(),
            key_hash: hash_str(&scratch.key),
            identity,
            original: pairs.iter().map(|(c, v)| (c.as_ref().to_string(), v.as_ref().to_string())).collect(),
            original_hash: orig,
            first_host: host_index,
        });
        (id, orig)
    }

    /// Adds a finished host.
    pub(crate) fn push_host(&mut self, role: Role, entry: HostEntry) {
        match role {
            Role::Survey => self.survey.push(entry),
            Role::Baseline => self.baseline.push(entry),
        }
    }

    /// Merges `other` into `self`, remapping its ids.
    pub(crate) fn merge(mut self, other: Builder) -> Builder {
        let host_offset = self.survey.len() as u32;
        let mut table_map = Vec::with_capacity(other.tables.len());
        let mut row_maps: Vec<Vec<u32>> = Vec::with_capacity(other.tables.len());
        for ot in other.tables {
            let ti = self.table(&ot.name);
            table_map.push(ti);
            let t = &mut self.tables[ti];
            // Identity ids of `other` → ids of `self`, through identity keys.
            let mut identity_map = vec![0u32; ot.identities];
            for (k, &oid) in &ot.identity_index {
                identity_map[oid as usize] = t.intern_identity(k);
            }
            // Walk rows in id order so that first-seen data stays first.
            let mut remap = vec![0u32; ot.rows.len()];
            for (oid, info) in ot.rows.into_iter().enumerate() {
                let id = match t.index.get(&*info.key) {
                    Some(&id) => id,
                    None => {
                        let id = t.rows.len() as u32;
                        t.index.insert(info.key.clone(), id);
                        t.rows.push(RowInfo {
                            identity: identity_map[info.identity as usize],
                            first_host: if info.first_host == u32::MAX {
                                u32::MAX
                            } else {
                                info.first_host + host_offset
                            },
                            ..info
                        });
                        id
                    }
                };
                remap[oid] = id;
            }
            row_maps.push(remap);
        }
        let remap_entry = |mut e: HostEntry| {
            for (t, q) in &mut e.queries {
                let old = *t;
                *t = table_map[old];
                if let HostQuery::Rows(rows) = q {
                    for (r, _) in rows.iter_mut() {
                        *r = row_maps[old][*r as usize];
                    }
                    rows.sort_unstable_by_key(|(r, _)| *r);
                    rows.dedup_by_key(|(r, _)| *r);
                }
            }
            e
        };
        self.survey.extend(other.survey.into_iter().map(remap_entry));
        self.baseline.extend(other.baseline.into_iter().map(remap_entry));
        self
    }
}

impl HostSink<'_> {
    /// Adds a query's rows.
    pub(crate) fn rows<'r, I>(&mut self, query: &str, rows: I)
    where
        I: IntoIterator<Item = Vec<(&'r str, &'r str)>>,
    {
        let ti = self.builder.table(query);
        let host_index = self.builder.next_host_index(self.role);
        let names = HostNames::new(&self.names.0, self.names.1.as_deref());
        let mut ids: Vec<(u32, u64)> =
            rows.into_iter().map(|pairs| self.builder.intern_row(ti, &names, host_index, &pairs)).collect();
        finish_ids(&mut ids);
        self.entry.queries.push((ti, HostQuery::Rows(ids)));
    }

    /// Records that a query gave no usable rows.
    pub(crate) fn failed(&mut self, query: &str, status: QueryStatus, message: String) {
        let ti = self.builder.table(query);
        self.entry.queries.push((ti, HostQuery::Failed(QueryFailure { query: query.to_string(), status, message })));
    }

    /// Records how the host was collected.
    pub(crate) fn vantage(&mut self, v: Option<Vantage>) {
        self.entry.vantage = v;
    }

    /// Records what a query could not read.
    pub(crate) fn unseen(&mut self, query: &str, u: Unseen) {
        self.entry.unseen.push((query.to_string(), u));
    }

    /// Finishes the host.
    pub(crate) fn finish(self) {
        self.builder.push_host(self.role, self.entry);
    }
}

/// Hashes of normalised keys seen in earlier runs, per query name.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub by_query: FxHashMap<String, (rustc_hash::FxHashSet<u64>, Plans)>,
    pub runs: usize,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Seen {
    pub(crate) fn add<'r>(
        &mut self,
        profile: &Profile,
        host: &HostNames<'_>,
        rows: impl IntoIterator<Item = Vec<(&'r str, &'r str)>>,
        scratch: &mut Scratch,
    ) {
        let (set, plans) = self.by_query.entry(profile.name.clone()).or_default();
        for pairs in rows {
            normalise_row(profile, plans, &pairs, host, scratch);
            set.insert(hash_str(&scratch.key));
        }
    }
}
