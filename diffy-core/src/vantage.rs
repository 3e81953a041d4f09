//! What the evidence could see: how a host was collected (its vantage), and
//! what each query could not read.
//!
//! Every script starts with a [`CONTEXT`](crate::plugin::CONTEXT) frame that
//! prints, as `key<TAB>value` lines, the effective user and groups, whether
//! the payload runs under `sudo` or `sudo -n` would have worked, how `/proc`
//! is mounted (`hidepid`), the effective capabilities and the security
//! context. Queries report what they were denied on standard error, one line
//! each: `diffy-unseen<TAB>WHAT` (a path, or `pid N` for a process whose
//! executable could not be read). Both are evidence like any output: kept raw
//! and parsed when the evidence is read.

use serde::{Deserialize, Serialize};

/// The prefix of a line on a query's standard error naming something it could not read.
pub const UNSEEN_MARKER: &str = "diffy-unseen\t";

/// How many of the unreadable items are named (the rest are counted).
pub const UNSEEN_SHOWN: usize = 5;

/// The shell of the context frame: read-only probes of the payload's own
/// privileges. `sudo -n true` (never prompts) tells whether sudo would have
/// worked for an unprivileged run.
pub const CONTEXT_SH: &str = r#"printf 'uid\t%s\n' "$(id -u 2>/dev/null)"
printf 'user\t%s\n' "$(id -un 2>/dev/null)"
printf 'groups\t%s\n' "$(id -Gn 2>/dev/null | tr ' ' ',')"
printf 'sudo_user\t%s\n' "${SUDO_USER:-}"
if [ "$(id -u 2>/dev/null)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then s=not_installed
  elif sudo -n true >/dev/null 2>&1; then s=yes
  else s=no; fi
  printf 'sudo_available\t%s\n' "$s"
fi
while read -r _ m t o _; do
  if [ "$m" = /proc ] && [ "$t" = proc ]; then
    case ,$o, in *,hidepid=*) h=${o#*hidepid=}; printf 'hidepid\t%s\n' "${h%%,*}" ;; esac
  fi
done < /proc/mounts 2>/dev/null
while IFS= read -r l; do
  case $l in
    CapEff:*) printf 'cap_eff\t%s\n' "$(printf '%s' "${l#CapEff:}" | tr -d ' \t')" ;;
    NoNewPrivs:*) printf 'no_new_privs\t%s\n' "$(printf '%s' "${l#NoNewPrivs:}" | tr -d ' \t')" ;;
  esac
done < /proc/self/status 2>/dev/null
c=$(tr -d '\000' < /proc/self/attr/current 2>/dev/null)
[ -z "$c" ] || printf 'security_context\t%s\n' "$c"
exit 0"#;

/// How a host's evidence was collected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vantage {
    /// Effective user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Effective user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The user who ran the payload through sudo, if it ran under sudo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    /// For a run without root: whether `sudo -n` would have worked
    /// (`yes`, `no`, `not_installed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_available: Option<String>,
    /// `/proc`'s `hidepid` option, when set: other users' processes may be hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidepid: Option<String>,
    /// Effective capabilities (hex, from `/proc/self/status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_eff: Option<String>,
    /// `NoNewPrivs` of the payload's shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privs: Option<bool>,
    /// The security context (SELinux or AppArmor label), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<String>,
}

impl Vantage {
    /// Reads the context frame's output; `None` when it names no user at all.
    pub fn parse(stdout: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(stdout);
        let mut v = Vantage::default();
        for line in text.lines() {
            let Some((k, val)) = line.split_once('\t') else { continue };
            let val = val.trim();
            if val.is_empty() {
                continue;
            }
            let val = cut(val, 200);
            match k {
                "uid" => v.uid = val.parse().ok(),
                "user" => v.user = Some(val),
                "groups" => v.groups = val.split(',').filter(|g| !g.is_empty()).take(64).map(|g| cut(g, 64)).collect(),
                "sudo_user" => v.sudo_user = Some(val),
                "sudo_available" => v.sudo_available = Some(val),
                "hidepid" => v.hidepid = Some(val),
                "cap_eff" => v.cap_eff = Some(val),
                "no_new_privs" => v.no_new_privs = Some(val == "1"),
                "security_context" => v.security_context = Some(val).filter(|c| c != "unconfined"),
                _ => {}
            }
        }
        (v.uid.is_some() || v.user.is_some()).then_some(v)
    }

    /// Whether the payload ran as root.
    pub fn is_root(&self) -> bool {
        self.uid == Some(0)
    }

    /// The user, as `ops (uid 1001)` (`unknown` when it did not say).
    pub fn who(&self) -> String {
        match (&self.user, self.uid) {
            (Some(u), Some(id)) => format!("{u} (uid {id})"),
            (Some(u), None) => u.clone(),
            (None, Some(id)) => format!("uid {id}"),
            (None, None) => "unknown".into(),
        }
    }

    /// Limits on what this vantage could see, in words (empty: none known).
    /// Root with every capability, no `hidepid` and no confinement sees all.
    pub fn limits(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.is_root() {
            let who = if self.user.is_none() && self.uid.is_none() { "an unknown user".into() } else { self.who() };
            let sudo = match self.sudo_available.as_deref() {
                Some("yes") => ", although sudo -n would have worked",
                Some("no") => ", and sudo -n would have asked for a password",
                Some("not_installed") => ", and sudo is not installed",
                _ => "",
            };
            out.push(format!("collected as {who} without root{sudo}"));
        }
        if let Some(h) = &self.hidepid {
            if h != "0" && h != "off" {
                out.push(format!("/proc is mounted with hidepid={h}: other users' processes are hidden"));
            }
        }
        if let Some(c) = &self.cap_eff {
            // CAP_DAC_OVERRIDE (bit 1) or CAP_DAC_READ_SEARCH (bit 2) let root read any file.
            if self.is_root() && u64::from_str_radix(c, 16).is_ok_and(|caps| caps & 0x6 == 0) {
                out.push(format!(
                    "root without CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH (CapEff {c}): files may be unreadable"
                ));
            }
            // CAP_SYS_PTRACE (bit 19): reading other processes' executables.
            if self.is_root() && u64::from_str_radix(c, 16).is_ok_and(|caps| caps & (1 << 19) == 0) {
                out.push(format!(
                    "root without CAP_SYS_PTRACE (CapEff {c}): other processes' executables may be unreadable"
                ));
            }
        }
        if let Some(c) = &self.security_context {
            out.push(format!("confined by the security context {c}"));
        }
        out
    }
}

/// What one query could not read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unseen {
    /// How many files, directories or processes it was denied.
    pub count: usize,
    /// The first of them (at most [`UNSEEN_SHOWN`]).
    pub first: Vec<String>,
}

impl Unseen {
    /// Reads the `diffy-unseen` lines of a query's standard error; `None`
    /// when there are none.
    pub fn from_stderr(stderr: &[u8]) -> Option<Self> {
        let marker = UNSEEN_MARKER.as_bytes();
        let mut u = Unseen::default();
        let mut seen = std::collections::HashSet::new();
        for line in stderr.split(|&b| b == b'\n') {
            let Some(what) = line.strip_prefix(marker) else { continue };
            if !seen.insert(what) {
                continue;
            }
            u.count += 1;
            if u.first.len() < UNSEEN_SHOWN {
                u.first.push(cut(&String::from_utf8_lossy(what), 300));
            }
        }
        (u.count > 0).then_some(u)
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_context_frame() {
        let v = Vantage::parse(
            b"uid\t1001\nuser\tops\ngroups\tops,adm\nsudo_user\t\nsudo_available\tno\nhidepid\tinvisible\n\
              cap_eff\t0000000000000000\nno_new_privs\t0\nsecurity_context\tunconfined\n",
        )
        .unwrap();
        assert_eq!(v.uid, Some(1001));
        assert_eq!(v.groups, ["ops", "adm"]);
        assert_eq!(v.sudo_user, None);
        assert_eq!(v.security_context, None, "unconfined is no confinement");
        let limits = v.limits();
        assert_eq!(limits[0], "collected as ops (uid 1001) without root, and sudo -n would have asked for a password");
        assert!(limits[1].contains("hidepid=invisible"), "{limits:?}");
        let root = Vantage::parse(b"uid\t0\nuser\troot\ncap_eff\t000001ffffffffff\n").unwrap();
        assert!(root.limits().is_empty());
        let weak = Vantage::parse(b"uid\t0\nuser\troot\ncap_eff\t0000000000000000\n").unwrap();
        assert!(weak.limits()[0].contains("CAP_DAC_READ_SEARCH"));
        assert_eq!(Vantage::parse(b"garbage"), None);
    }

    #[test]
    fn counts_what_a_query_could_not_read() {
        let mut e = b"find: '/x': Permission denied\n".to_vec();
        for i in 0..8 {
            e.extend_from_slice(format!("diffy-unseen\t/root/d{i}\n").as_bytes());
        }
        e.extend_from_slice(b"diffy-unseen\t/root/d0\n");
        let u = Unseen::from_stderr(&e).unwrap();
        assert_eq!(u.count, 8, "duplicates counted once");
        assert_eq!(u.first.len(), UNSEEN_SHOWN);
        assert_eq!(u.first[0], "/root/d0");
        assert_eq!(Unseen::from_stderr(b"other\n"), None);
    }
}
