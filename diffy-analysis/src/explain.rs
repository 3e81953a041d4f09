//! One-line summaries of rows and the sentences that explain findings.

use diffy_core::Row;

use crate::profile::QueryKind;

fn get<'a>(row: &'a Row, col: &str) -> &'a str {
    row.get(col).map(String::as_str).unwrap_or("")
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn protocol(p: &str) -> &str {
    match p {
        "6" => "tcp",
        "17" => "udp",
        other => other,
    }
}

/// A short human description of a row of query `kind`.
pub(crate) fn summarise(kind: QueryKind, row: &Row) -> String {
    let s = match kind {
        QueryKind::Processes => {
            let what = if get(row, "cmdline").is_empty() { get(row, "name") } else { get(row, "cmdline") };
            let path = get(row, "path");
            let mut s = short(what, 120);
            if !path.is_empty() && !what.starts_with(path) {
                s = format!("{s} ({path})");
            }
            if !get(row, "uid").is_empty() {
                s = format!("{s} as uid {}", get(row, "uid"));
            }
            s
        }
        QueryKind::ListeningPorts => {
            let by = if get(row, "path").is_empty() { get(row, "name") } else { get(row, "path") };
            format!(
                "{}:{}/{} by {}",
                get(row, "address"),
                get(row, "port"),
                protocol(get(row, "protocol")),
                if by.is_empty() { "an unknown process" } else { by }
            )
        }
        QueryKind::Crontab => {
            let when = if get(row, "event").is_empty() {
                ["minute", "hour", "day_of_month", "month", "day_of_week"]
                    .iter()
                    .map(|c| get(row, c))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                get(row, "event").to_string()
            };
            format!("{when} {} in {}", short(get(row, "command"), 120), get(row, "path"))
        }
        QueryKind::KernelModules => format!("module {}", get(row, "name")),
        QueryKind::Users => format!(
            "user {} (uid {}, home {}, shell {})",
            get(row, "username"),
            get(row, "uid"),
            get(row, "directory"),
            get(row, "shell")
        ),
        QueryKind::AuthorizedKeys => {
            let key = get(row, "key");
            let tail: String = key.chars().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
            format!("{} key …{} {} in {}", get(row, "algorithm"), tail, get(row, "comment"), get(row, "key_file"))
        }
        QueryKind::FileHashes => format!("{} sha256 {}", get(row, "path"), short(get(row, "sha256"), 16)),
        QueryKind::ShellHistory => format!("{} has {}", get(row, "username"), get(row, "history_file")),
        QueryKind::SuidBin => format!(
            "{} {} {}:{}",
            get(row, "permissions"),
            get(row, "path"),
            get(row, "username"),
            get(row, "groupname")
        ),
        QueryKind::StartupItems => format!("{} → {}", get(row, "name"), get(row, "path")),
        QueryKind::LoadedCode => {
            format!("{} ({}) {} {}", get(row, "name"), get(row, "pid"), get(row, "kind"), get(row, "value"))
        }
        QueryKind::FileCapabilities => format!("{} {}", get(row, "path"), get(row, "capabilities")),
        QueryKind::TempFiles => {
            format!(
                "{} {} ({} {}, sha256 {})",
                get(row, "kind"),
                get(row, "path"),
                get(row, "mode"),
                get(row, "owner"),
                short(get(row, "sha256"), 16)
            )
        }
        QueryKind::HiddenProcesses => {
            format!("hidden process {} ({}) {}", get(row, "name"), get(row, "path"), get(row, "cmdline"))
        }
        QueryKind::Shadow => format!("{}: password {}", get(row, "username"), get(row, "password_state")),
        QueryKind::Persistence => match get(row, "kind") {
            "link" => format!("{} → {}", get(row, "path"), get(row, "target")),
            _ => format!(
                "{} ({} {}, sha256 {})",
                get(row, "path"),
                get(row, "mode"),
                get(row, "owner"),
                short(get(row, "sha256"), 16)
            ),
        },
        QueryKind::PackageIntegrity => {
            let what = if get(row, "attribute") == "c" { "configuration file" } else { "file" };
            format!("{} {} {what} of a {} package", get(row, "flags"), get(row, "path"), get(row, "manager"))
        }
        QueryKind::Other => String::new(),
    };
    if s.trim().is_empty() {
        let pairs: Vec<String> = row.iter().map(|(k, v)| format!("{k}={}", short(v, 60))).collect();
        short(&pairs.join(", "), 200)
    } else {
        s
    }
}

/// Columns whose values differ between two rows, as `col: a → b`.
pub(crate) fn differences(from: &Row, to: &Row) -> String {
    let mut out = Vec::new();
    for (k, v) in to {
        let old = from.get(k).map(String::as_str).unwrap_or("");
        if old != v {
            out.push(format!("{k} {} → {}", short(old, 40), short(v, 40)));
        }
    }
    out.join(", ")
}
