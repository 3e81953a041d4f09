//! Payloads: which queries run on a host. Built in: the standard security pack
//! as osquery SQL ([`OsqueryPayload`]) and as plain shell for hosts without
//! osquery ([`ShellPayload`]), and payloads read from a file ([`FilePayload`]).
//!
//! Both standard packs ask the same questions under the same query names with
//! the same column names (osquery's), so their rows can be compared and the
//! analysis normalises them the same way:
//!
//! | query | columns |
//! |---|---|
//! | `processes` | pid, parent, uid, name, path, cmdline |
//! | `listening_ports` | pid, port, protocol, family, address, name, path |
//! | `crontab` | event, minute, hour, day_of_month, month, day_of_week, command, path |
//! | `kernel_modules` | name, size, used_by, status, address |
//! | `users` | username, uid, gid, description, directory, shell |
//! | `authorized_keys` | uid, username, key_file, options, algorithm, key, comment |
//! | `file_hashes` | path, sha256, package_check |
//! | `shell_history` | username, history_file |
//! | `suid_bin` | path, username, groupname, permissions |
//! | `startup_items` | name, path, source, status |
//! | `persistence` | path, kind, target, mode, owner, size, sha256, content |
//! | `loaded_code` | pid, name, kind, value |
//! | `file_capabilities` | path, capabilities |
//! | `temp_files` | path, kind, mode, owner, size, sha256 |
//! | `shadow` | username, password_state, last_change, max_days |
//! | `hidden_processes` | pid, name, path, cmdline |
//! | `package_integrity` (deep pack only) | path, flags, attribute, manager |
//!
//! One row shape per query, whichever pack asks. osquery answers five
//! queries with its own tables, its SQL aliased to these columns and put in
//! this shape where osquery differs (`processes` puts back the ` (deleted)`
//! osquery moves to `on_disk`; the shell pack's `crontab` collapses runs of
//! spaces and tabs in `command`, as osquery does): `processes`,
//! `listening_ports`, `crontab`, `kernel_modules`, `users`. Every other query
//! is the same shell in both packs, because osquery's table for it sees less
//! or answers another question; each query's description says why
//! (`diffy plugins`, `--format json`). osquery's `process_memory_map`,
//! `process_envs` and `shadow` tables are not used yet.
//!
//! osqueryi runs with `--flagfile=/dev/null` (a host's flag file cannot load
//! extensions or change what it reads), `--disable_database`,
//! `--disable_extensions` and `--disable_events`: no database, socket or
//! history is written. It still creates `~/.osquery/`; the payload removes it
//! afterwards when it did not exist before and is empty, which leaves the home
//! directory's modification time changed.

use std::path::Path;

use crate::names::TargetKey;
use crate::query::{OutputFormat, PayloadSpec, Query};
use crate::{Error, Result};

/// What a payload may adapt to.
#[derive(Clone, Debug)]
pub struct PayloadContext {
    /// The target key of the run.
    pub target: TargetKey,
}

/// Provides the queries of a run.
///
/// # Contract
/// - Returns a valid spec ([`PayloadSpec::validate`]); the engine checks again.
/// - Queries must be read-only: Diffy runs during incidents on hosts that are
///   evidence.
pub trait Payload: Send + Sync + std::fmt::Debug {
    /// The payload's name.
    fn name(&self) -> &str;

    /// The queries for this context.
    fn spec(&self, ctx: &PayloadContext) -> Result<PayloadSpec>;
}

/// Key system binaries whose SHA-256 the standard packs record.
pub const KEY_BINARIES: &[&str] = &[
    "/usr/bin/bash",
    "/usr/bin/sh",
    "/usr/bin/dash",
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
    "/bin/bash",
    "/bin/sh",
    "/bin/ls",
    "/bin/ps",
    "/bin/login",
    "/bin/su",
    "/bin/netstat",
    "/sbin/sshd",
];

struct Standard {
    name: &'static str,
    /// The row shape both packs give (the module documentation's table).
    columns: &'static [&'static str],
    identity: &'static [&'static str],
    volatile: &'static [&'static str],
    description: &'static str,
    osquery: &'static str,
    shell: &'static str,
    format: OutputFormat,
}

// One or two processes per process listed: the query runs on every host of
// the fleet, often with hundreds of processes. A tab in a process name, a tab
// or line break inside an executable's path (an attacker's choices) are
// blanked, like in the cmdline; line breaks at the end of a path are dropped.
const PROCESSES_SH: &str = r#"printf 'pid\tparent\tuid\tname\tpath\tcmdline\n'
t=$(printf '\t')
nl='
'
for d in /proc/[0-9]*; do
  n=; pp=; u=
  { while IFS= read -r l; do
      case $l in
        Name:*) n=${l#Name:?} ;;
        PPid:*) pp=${l#PPid:?} ;;
        Uid:*) set -- ${l#Uid:}; u=$1; break ;;
      esac
    done < "$d/status"; } 2>/dev/null || continue
  case $n in *"$t"*) n=$(printf '%s' "$n" | tr '\t' ' ') ;; esac
  e=$(readlink "$d/exe" 2>/dev/null)
  case $e in *"$t"* | *"$nl"*) e=$(printf '%s' "$e" | tr '\t\n' '  ') ;; esac
  c=$(tr '\000\t\n' '   ' < "$d/cmdline" 2>/dev/null)
  # A command line but no executable: denied (kernel threads have neither).
  [ -n "$e" ] || [ -z "$c" ] || printf 'diffy-unseen\tpid %s %s\n' "${d#/proc/}" "$n" >&2
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${d#/proc/}" "$pp" "$u" "$n" "$e" "${c% }"
done"#;

const LISTENING_SH: &str = r#"o=$(ss -H -tulnp 2>/dev/null || ss -tulnp) || exit $?
printf '%s\n' "$o"
t=$(printf '\t')
nl='
'
for p in $(printf '%s\n' "$o" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
  e=$(readlink "/proc/$p/exe" 2>/dev/null)
  case $e in *"$t"* | *"$nl"*) e=$(printf '%s' "$e" | tr '\t\n' '  ') ;; esac
  printf 'exe\t%s\t%s\n' "$p" "$e"
done
# ss names no process for sockets of processes it may not inspect.
printf '%s\n' "$o" | grep -v -e 'users:(' -e '^Netid' | while read -r _ _ _ _ l _; do
  [ -z "$l" ] || printf 'diffy-unseen\tlistener %s\n' "$l" >&2
done"#;

// What these three could not read, the probe of the same name says first
// (`probe_of`).
const CRONTAB_SH: &str = r#"for f in /etc/crontab /etc/cron.d/* /var/spool/cron/crontabs/* /var/spool/cron/*; do
  [ -f "$f" ] && [ -r "$f" ] || continue
  while IFS= read -r l || [ -n "$l" ]; do printf '%s\t%s\n' "$f" "$l"; done < "$f"
done"#;

const AUTHORIZED_KEYS_SH: &str = r#"while IFS=: read -r u _ uid _ _ home _; do
  for f in "$home/.ssh/authorized_keys" "$home/.ssh/authorized_keys2"; do
    [ -f "$f" ] && [ -r "$f" ] || continue
    while IFS= read -r l || [ -n "$l" ]; do printf '%s\t%s\t%s\t%s\n' "$uid" "$u" "$f" "$l"; done < "$f"
  done
done < /etc/passwd"#;

const SHELL_HISTORY_SH: &str = r#"printf 'username\thistory_file\n'
while IFS=: read -r u _ _ _ _ home _; do
  for f in .bash_history .zsh_history .sh_history .ash_history .history .python_history .mysql_history; do
    if [ -f "$home/$f" ]; then printf '%s\t%s\n' "$u" "$home/$f"; fi
  done
done < /etc/passwd"#;

const SUID_SH: &str = r#"printf 'path\tusername\tgroupname\tpermissions\n'
t=$(printf '\t')
set --
for d in /bin /sbin /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin /usr/libexec /opt /tmp /var/tmp /dev/shm; do
  [ -d "$d" ] && [ ! -L "$d" ] && set -- "$@" "$d"
done
[ $# -gt 0 ] || exit 0
# What find was denied goes to standard error as diffy-unseen lines.
{ find "$@" -xdev -type f \( -perm -4000 -o -perm -2000 \) -exec stat -c "%n$t%U$t%G$t%A" {} + 2>&1 1>&3 3>&- |
  sed -n "s/^find: '\\(.*\\)': Permission denied\$/diffy-unseen$t\\1/p" >&2; } 3>&1
exit 0"#;

const STARTUP_SH: &str = r#"printf 'name\tpath\tsource\tstatus\n'
# GNU find reads every link in one process; elsewhere, one readlink per entry.
if find /etc/systemd/system -maxdepth 0 -printf '' 2>/dev/null; then
  find /etc/systemd/system -mindepth 2 -maxdepth 2 -path '*.wants/*' -printf '%f\t%l\t%h\tenabled\n' 2>/dev/null
  find /etc/init.d /etc/rc.local -maxdepth 1 ! -type d -printf '%f\t%p\t%h\tenabled\n' 2>/dev/null
  exit 0
fi
for f in /etc/systemd/system/*.wants/* /etc/init.d/* /etc/rc.local; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  p=$(readlink -f "$f" 2>/dev/null) || p=$f
  printf '%s\t%s\t%s\t%s\n' "${f##*/}" "$p" "${f%/*}" enabled
done"#;

// The files where persistence lives on Linux, that differ from a stock host:
// every entry of the locations below is listed, then the files a package
// installed and that still have its checksum (dpkg's md5sums and conffiles)
// and the links a package shipped are dropped. What is left grows with what
// was added or changed, not with the size of the host. Without dpkg (rpm
// hosts), every entry is listed.
const PERSISTENCE_SH: &str = r#"printf 'path\tkind\ttarget\tmode\towner\tsize\tsha256\tcontent\n'
t=$(printf '\t')
# Where persistence lives: system locations, then each user's start-up files.
{
  for p in /etc/crontab /etc/anacrontab /etc/cron.d /etc/cron.hourly /etc/cron.daily /etc/cron.weekly \
    /etc/cron.monthly /var/spool/cron \
    /etc/systemd/system /etc/systemd/user /etc/systemd/system-generators /etc/systemd/user-generators \
    /lib/systemd/system /usr/lib/systemd/system /lib/systemd/user /usr/lib/systemd/user /run/systemd/system \
    /lib/systemd/system-generators /usr/lib/systemd/system-generators /usr/local/lib/systemd \
    /etc/init.d /etc/rc0.d /etc/rc1.d /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d /etc/rc6.d /etc/rcS.d /etc/rc.local \
    /etc/profile /etc/profile.d /etc/bash.bashrc /etc/bash.bash_logout /etc/environment /etc/zsh /etc/zshrc \
    /etc/zprofile /etc/zshenv /etc/ld.so.preload /etc/ld.so.conf /etc/ld.so.conf.d /etc/pam.d /etc/security \
    /lib/security /lib64/security /lib/x86_64-linux-gnu/security /usr/lib/x86_64-linux-gnu/security \
    /lib/aarch64-linux-gnu/security /usr/lib/aarch64-linux-gnu/security /usr/lib64/security \
    /etc/sudoers /etc/sudoers.d /etc/ssh/sshd_config /etc/ssh/sshd_config.d /etc/ssh/sshrc /etc/update-motd.d \
    /etc/udev/rules.d /lib/udev/rules.d /usr/lib/udev/rules.d /etc/xdg/autostart /etc/apt/apt.conf.d \
    /etc/yum/pluginconf.d /etc/dnf/plugins /usr/lib/yum-plugins /etc/modules /etc/modules-load.d \
    /usr/lib/modules-load.d /etc/modprobe.d /lib/modprobe.d /usr/lib/modprobe.d /etc/passwd /etc/group /etc/shadow \
    /etc/gshadow /var/spool/at; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    # usr-merged: /lib is /usr/lib, listed once.
    case $p in /lib/*|/lib64/*) [ -L /lib ] && continue ;; esac
    find "$p" -maxdepth 4 \( -type f -o -type l \) 2>/dev/null
  done
  while IFS=: read -r _ _ _ _ _ home _; do
    case $home in /|"") continue ;; esac
    for f in .bashrc .profile .bash_profile .bash_login .bash_logout .zshrc .zprofile .zshenv .zlogin .ssh/rc; do
      [ -f "$home/$f" ] || [ -L "$home/$f" ] && printf '%s\n' "$home/$f"
    done
    # History files made links (to /dev/null) hide what was typed.
    for f in .bash_history .zsh_history .sh_history .history; do
      [ -L "$home/$f" ] && printf '%s\n' "$home/$f"
    done
    for d in "$home/.config/autostart" "$home/.config/systemd/user"; do
      [ -d "$d" ] && find "$d" -maxdepth 3 \( -type f -o -type l \) 2>/dev/null
    done
  done < /etc/passwd
} | grep -v "$t" | sort -u |
# Files a package installed, unchanged, are the stock host: only the rest is
# listed. One md5sum for all the regular files (xargs), not one per file; a
# file md5sum could not read, or whose name it escapes, is listed.
{
  md5=$(command -v md5sum)
  if [ -n "$md5" ] && [ -d /var/lib/dpkg/info ]; then
    list=$(cat)
    {
      printf '%s\n' "$list" | while IFS= read -r f; do
        [ -n "$f" ] || continue
        if [ -f "$f" ] && [ ! -L "$f" ]; then printf 'R -%s%s\n' "$t" "$f"; else printf 'L -%s%s\n' "$t" "$f"; continue; fi
        # md5sum escapes a name with a backslash (systemd's \x2d): those alone, one by one.
        case $f in *\\*) printf 'F %s\n' "$(md5sum < "$f" 2>/dev/null | cut -c1-32)$t$f" ;; esac
      done
      if command -v xargs >/dev/null 2>&1; then
        printf '%s\n' "$list" | while IFS= read -r f; do
          case $f in *\\*) continue ;; esac
          [ -f "$f" ] && [ ! -L "$f" ] && printf '%s\n' "$f"
        done | tr '\n' '\000' | xargs -0 md5sum 2>/dev/null | sed -n "s/^\([0-9a-f]\{32\}\)  \(\/.*\)\$/F \1$t\2/p"
      else
        printf '%s\n' "$list" | while IFS= read -r f; do
          [ -f "$f" ] && [ ! -L "$f" ] && printf 'F %s\n' "$(md5sum < "$f" 2>/dev/null | cut -c1-32)$t$f"
        done
      fi
    } | awk -v FS="$t" -v merged="$([ -L /lib ] && echo 1)" '
      function add(p, m) { stock[p] = m; if (merged && p ~ /^\/(lib|lib64|bin|sbin)\//) stock["/usr" p] = m }
      FILENAME == "-" && $1 == "R -" { regular[$2] = 1; next }
      FILENAME == "-" { k = substr($1, 3); if ($1 != "L -") hashed[$2] = 1
        if (!(($2) in stock) || stock[$2] != k) print $2; next }
      FILENAME ~ /status$/ { if (/^ \//) { n = split($0, w, " "); if (n >= 2) add(w[1], w[2]) } next }
      FILENAME ~ /md5sums$/ { add("/" substr($0, 35), substr($0, 1, 32)); next }
      !($0 in stock) { add($0, "-") }
      END { for (p in regular) if (!(p in hashed)) print p }
    ' /var/lib/dpkg/status /var/lib/dpkg/info/*.md5sums /var/lib/dpkg/info/*.list -
  else
    cat
  fi
} |
# Each entry: what it is, and for a text file what it runs: its lines but
# comments and blank ones, tabs and line breaks written as backslash-t and -n (1 KiB, or
# the first 256 and the last 512 bytes, where additions go; 24 KiB in all).
{
  budget=24576
  while IFS= read -r f; do
    m=$(stat -c "%F$t%a$t%U:%G$t%s" "$f" 2>/dev/null) || continue
    k=${m%%"$t"*}; rest=${m#*"$t"}
    case $k in "symbolic link") k=link ;; "regular file"|"regular empty file") k=file ;; *) k=other ;; esac
    l=; h=; c=
    [ "$k" = link ] && { l=$(readlink "$f" 2>/dev/null | tr '\t\n' '  '); l=${l% }; }
    # Of the password files, their mode and owner only: no digest of the
    # hashes, and no size (passwords set per host would make every host differ).
    case $f in /etc/shadow|/etc/gshadow) printf '%s\t%s\t\t%s\t\t\t\n' "$f" "$k" "${rest%"$t"*}"; continue ;; esac
    if [ -f "$f" ]; then
      h=$(sha256sum < "$f" 2>/dev/null | cut -c1-64)
      # A link's own target is listed if it differs from stock: no content twice.
      if [ "$k" = file ] && [ "$f" != /etc/passwd ] && [ "$f" != /etc/group ] && [ "$budget" -gt 0 ] &&
        grep -Iq . "$f" 2>/dev/null; then
          c=$(awk 'BEGIN { ORS = ""; h = sprintf("%c", 35) }
            { l = $0; sub(/^[ \t]+/, "", l) }
            l == "" || substr(l, 1, 2) == "//" || (substr(l, 1, 1) == h && !(NR == 1 && substr(l, 2, 1) == "!")) { next }
            { gsub(/\t/, "\\t"); gsub(/\r/, "\\r"); s = s $0 "\\n" }
            END { if (length(s) > 1024) s = substr(s, 1, 256) " [...] " substr(s, length(s) - 511); print s }' "$f" 2>/dev/null)
          budget=$((budget - ${#c}))
      fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$f" "$k" "$l" "$rest" "$h" "$c"
  done
}"#;

// Code loaded into processes from outside the system library directories,
// and the dynamic-linker variables of their environments (only those: an
// environment holds secrets). One grep per kind over every process.
const LOADED_CODE_SH: &str = r#"printf 'pid\tname\tkind\tvalue\n'
t=$(printf '\t')
{
  # The payload's own processes (DIFFY_QUERY=1) carry its caller's environment: left out.
  grep -a -l 'DIFFY_QUERY=1' /proc/[0-9]*/environ 2>/dev/null | sed 's|^/proc/\([0-9]*\)/environ$|O\t\1|'
  grep -H '' /proc/[0-9]*/comm 2>/dev/null | sed 's|^/proc/\([0-9]*\)/comm:|C\t\1\t|'
  grep -H '\.so' /proc/[0-9]*/maps 2>/dev/null | awk '{ split($1, a, "/"); v = $6
    if (v ~ /^\// && v ~ /\.so(\.[0-9]+)*$/ && v !~ /^\/(usr\/)?(lib|lib64|lib32)\//)
      print "M\t" a[3] "\t" v ($7 == "(deleted)" ? " (deleted)" : "") }'
  grep -a -H -o -E '(LD_PRELOAD|LD_LIBRARY_PATH|LD_AUDIT)=[^[:cntrl:]]*' /proc/[0-9]*/environ 2>/dev/null |
    sed 's|^/proc/\([0-9]*\)/environ:|E\t\1\t|'
} | awk -F "$t" '$1 == "O" { own[$2] = 1; next }
  $1 == "C" { n[$2] = $3; next }
  # Also out: processes started after the names were read (the greps of this query).
  $2 in own || !($2 in n) { next }
  { k = $1 == "M" ? "library" : "environment"; key = $2 SUBSEP k SUBSEP $3
    if (!(key in seen)) { seen[key] = 1; print $2 "\t" n[$2] "\t" k "\t" $3 } }'"#;

// File capabilities in the binary directories and the writable ones.
const FILE_CAPABILITIES_SH: &str = r#"printf 'path\tcapabilities\n'
command -v getcap >/dev/null 2>&1 || { printf 'diffy-unseen\tgetcap is not installed (libcap2-bin)\n' >&2; exit 0; }
set --
for d in /bin /sbin /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin /usr/libexec /opt /tmp /var/tmp /dev/shm; do
  [ -d "$d" ] && [ ! -L "$d" ] && set -- "$@" "$d"
done
[ $# -gt 0 ] || exit 0
getcap -r "$@" 2>/dev/null | awk '{ c = $NF; $NF = ""; sub(/ +$/, ""); sub(/ =$/, ""); print $0 "\t" c }'"#;

// Executables, setuid/setgid and hidden entries of the writable directories,
// executables and setuid/setgid files in system accounts' homes (500 at most
// in all), with what they are.
const TEMP_FILES_SH: &str = r#"printf 'path\tkind\tmode\towner\tsize\tsha256\n'
t=$(printf '\t')
set --
for d in /tmp /var/tmp /dev/shm /run/shm /run/user /var/crash; do [ -d "$d" ] && [ ! -L "$d" ] && set -- "$@" "$d"; done
[ $# -gt 0 ] || exit 0
# System accounts' homes (uid 1-999; not / and not the system directories):
# executables and setuid/setgid files only, as their hidden entries are
# histories and caches.
homes=$(awk -F: '$3 > 0 && $3 < 1000 && $6 ~ /^\/./ && $6 !~ /^\/(usr|bin|sbin|lib|lib64|dev|proc|sys|etc|nonexistent)(\/|$)/ { print $6 }' /etc/passwd 2>/dev/null | sort -u)
{
  find "$@" -xdev -maxdepth 5 \( -type f \( -perm -u+x -o -perm -g+x -o -perm -o+x -o -name '.*' \) -o -type d -name '.*' \) \
    ! -name .X11-unix ! -name .ICE-unix ! -name .font-unix ! -name .XIM-unix ! -name .Test-unix 2>/dev/null
  printf '%s\n' "$homes" | while IFS= read -r h; do
    [ -n "$h" ] && [ -d "$h" ] && [ ! -L "$h" ] || continue
    find "$h" -xdev -maxdepth 5 -type f \( -perm -u+x -o -perm -g+x -o -perm -o+x -o -perm -4000 -o -perm -2000 \) 2>/dev/null
  done
} | grep -v "$t" | head -n 500 | while IFS= read -r f; do
  m=$(stat -c "%F$t%a$t%U:%G$t%s" "$f" 2>/dev/null) || continue
  k=${m%%"$t"*}; rest=${m#*"$t"}; h=
  case $k in "regular file"|"regular empty file") k=file ;; directory) k=dir ;; *) k=other ;; esac
  [ "$k" = file ] && [ "${rest##*"$t"}" -le 67108864 ] && h=$(sha256sum < "$f" 2>/dev/null | cut -c1-64)
  printf '%s\t%s\t%s\t%s\n' "$f" "$k" "$rest" "$h"
done"#;

// Each account's password state from /etc/shadow, never its hash: empty,
// locked, or the hash's algorithm.
const SHADOW_SH: &str = r#"printf 'username\tpassword_state\tlast_change\tmax_days\n'
if [ ! -r /etc/shadow ]; then printf 'diffy-unseen\t/etc/shadow\n' >&2; exit 0; fi
awk -F: '{ p = $2
  if (p == "") s = "empty"
  else if (p ~ /^[!*]/) s = (length(p) > 2 ? "locked (a hash kept)" : "locked")
  else if (p ~ /^\$/) { q = substr(p, 2); s = "hash " substr(q, 1, index(q, "$") - 1) }
  else s = "other"
  print $1 "\t" s "\t" $3 "\t" $5 }' /etc/shadow"#;

// Processes reachable at /proc/PID but left out of the /proc listing: what a
// readdir hook (an LD_PRELOAD rootkit) does. Every pid up to pid_max is
// tried (past 262,144, up to the last pid given out); threads are reachable
// too, but their Tgid is another pid's.
const HIDDEN_PROCESSES_SH: &str = r#"printf 'pid\tname\tpath\tcmdline\n'
max=$(cat /proc/sys/kernel/pid_max 2>/dev/null) || max=32768
lim=$max
if [ "$lim" -gt 262144 ]; then
  last=$(cat /proc/sys/kernel/ns_last_pid 2>/dev/null) || last=$lim
  lim=$((last + 1024))
  if [ "$lim" -gt 262144 ]; then printf 'diffy-unseen\tpids above 262144 (not walked)\n' >&2; lim=262144; fi
fi
listed=" $(cd /proc && echo [0-9]*) "
i=1
while [ "$i" -le "$lim" ]; do
  if [ -d "/proc/$i" ]; then
    case $listed in *" $i "*) ;; *)
      t=$(sed -n 's/^Tgid:[[:space:]]*//p' "/proc/$i/status" 2>/dev/null)
      # A thread is reachable but never listed; a process started since the
      # listing is listed now.
      case " $(cd /proc && echo [0-9]*) " in *" $i "*) t= ;; esac
      if [ "$t" = "$i" ]; then
        n=$(tr -d '\t\n' < "/proc/$i/comm" 2>/dev/null)
        e=$(readlink "/proc/$i/exe" 2>/dev/null | tr '\t\n' '  '); e=${e% }
        c=$(tr '\000\t\n' '   ' < "/proc/$i/cmdline" 2>/dev/null)
        printf '%s\t%s\t%s\t%s\n' "$i" "$n" "$e" "${c% }"
      fi ;;
    esac
  fi
  i=$((i + 1))
done"#;

// What osquery's tables could not read, named the shell pack's way (osquery
// returns only what its caller can read, and says nothing of the rest). Run
// after `osqueryi`, on its standard error.
const PROCESSES_PROBE: &str = r#"for d in /proc/[0-9]*; do
  [ -n "$(tr -d '\000' < "$d/cmdline" 2>/dev/null | head -c 1)" ] || continue
  readlink "$d/exe" >/dev/null 2>&1 && continue
  n=$(sed -n 's/^Name:[[:space:]]*//p' "$d/status" 2>/dev/null)
  printf 'diffy-unseen\tpid %s %s\n' "${d#/proc/}" "$n" >&2
done"#;

const LISTENING_PROBE: &str = r#"{ ss -H -tulnp 2>/dev/null || true; } | grep -v 'users:(' | while read -r _ _ _ _ l _; do
  [ -z "$l" ] || printf 'diffy-unseen\tlistener %s\n' "$l" >&2
done"#;

const CRONTAB_PROBE: &str = r#"for d in /etc/cron.d /var/spool/cron/crontabs /var/spool/cron; do
  if [ -d "$d" ] && { [ ! -r "$d" ] || [ ! -x "$d" ]; }; then printf 'diffy-unseen\t%s\n' "$d" >&2; fi
done
for f in /etc/crontab /etc/cron.d/* /var/spool/cron/crontabs/* /var/spool/cron/*; do
  if [ -f "$f" ] && [ ! -r "$f" ]; then printf 'diffy-unseen\t%s\n' "$f" >&2; fi
done"#;

const HOMES_PROBE: &str = r#"while IFS=: read -r _ _ _ _ _ home _; do
  for d in "$home" "$home/.ssh"; do
    if [ -d "$d" ] && [ ! -x "$d" ]; then printf 'diffy-unseen\t%s\n' "$home/.ssh" >&2; continue 2; fi
  done
  for f in "$home/.ssh/authorized_keys" "$home/.ssh/authorized_keys2"; do
    if [ -f "$f" ] && [ ! -r "$f" ]; then printf 'diffy-unseen\t%s\n' "$f" >&2; fi
  done
done < /etc/passwd"#;

const HISTORY_PROBE: &str = r#"while IFS=: read -r _ _ _ _ _ home _; do
  if [ -d "$home" ] && [ ! -x "$home" ]; then printf 'diffy-unseen\t%s\n' "$home" >&2; fi
done < /etc/passwd"#;

const SUID_PROBE: &str = r#"t=$(printf '\t')
set --
for d in /bin /sbin /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin /usr/libexec /opt /tmp /var/tmp /dev/shm; do
  [ -d "$d" ] && [ ! -L "$d" ] && set -- "$@" "$d"
done
[ $# -gt 0 ] || exit 0
find "$@" -xdev -type d ! -readable -prune -print 2>/dev/null | sed "s/^/diffy-unseen$t/" >&2"#;

/// When a standard query's shell form names what it could not read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ShellChecks {
    /// While it runs: the check would be a second pass over `/proc`, or a
    /// second `find`.
    WhileRunning,
    /// By running the probe first.
    Probe,
}

/// The check that names what a standard query could not read: run after
/// `osqueryi` in the osquery pack, and in the shell pack as it says.
fn probe_of(name: &str) -> Option<(&'static str, ShellChecks)> {
    Some(match name {
        "processes" => (PROCESSES_PROBE, ShellChecks::WhileRunning),
        "listening_ports" => (LISTENING_PROBE, ShellChecks::WhileRunning),
        "suid_bin" => (SUID_PROBE, ShellChecks::WhileRunning),
        "crontab" => (CRONTAB_PROBE, ShellChecks::Probe),
        "authorized_keys" => (HOMES_PROBE, ShellChecks::Probe),
        "shell_history" => (HISTORY_PROBE, ShellChecks::Probe),
        _ => return None,
    })
}

fn file_hashes_sh() -> String {
    // On usr-merged systems /bin and /sbin link to /usr: hash each file once
    // (every /bin and /sbin entry of the list has its /usr twin). Each file is
    // checked against the MD5 its package recorded (dpkg's md5sums, which
    // list `bin/ls` for what usr-merge put at /usr/bin/ls): `ok`, `mismatch`
    // (replaced after installation), `unpackaged`, or `unknown` without dpkg.
    let mut s = String::from("merged=0\n[ -L /bin ] && [ -L /sbin ] && merged=1\nset --\nfor f in");
    for p in KEY_BINARIES {
        s.push(' ');
        s.push_str(p);
    }
    s.push_str(
        r#"; do
  case $merged:$f in 1:/bin/*|1:/sbin/*) continue ;; esac
  [ -f "$f" ] || continue
  # What cannot be read is unseen, not absent.
  if [ -r "$f" ]; then set -- "$@" "$f"; else printf 'diffy-unseen\t%s\n' "$f" >&2; fi
done
printf 'path\tsha256\tpackage_check\n'
[ $# -gt 0 ] || exit 0
db=
[ -d /var/lib/dpkg/info ] && db=dpkg
{
  sha256sum "$@" | sed 's/^/S /'
  if [ "$db" = dpkg ]; then
    md5sum "$@" | sed 's/^/M /'
    # Only the lines that may name these files (awk keeps the exact ones).
    for f; do
      printf '  %s\n' "${f#/}"
      case $merged:$f in 1:/usr/bin/*|1:/usr/sbin/*|1:/usr/lib*) printf '  %s\n' "${f#/usr/}" ;; esac
    done | grep -h -F -f - /var/lib/dpkg/info/*.md5sums 2>/dev/null | sed 's/^/D /'
  fi
} | awk -v db="$db" -v merged="$merged" '
  { p = substr($0, length($1 $2) + 4) }
  $1 == "S" { if (!(p in sha)) order[++n] = p; sha[p] = $2; next }
  $1 == "M" { md5[p] = $2; next }
  $1 == "D" {
    p = "/" p
    # usr-merge moved /bin, /sbin and /lib* under /usr; dpkg still lists the old paths.
    if (merged == 1 && p ~ /^\/(bin|sbin|lib[^\/]*)\//) p = "/usr" p
    # Several packages may list a path (diversions): any recorded sum will do.
    if (p in sha) pkg[p] = pkg[p] " " $2 " "
    next
  }
  END {
    for (i = 1; i <= n; i++) {
      p = order[i]
      c = "unknown"
      if (db != "" && (p in md5)) c = (p in pkg) ? (index(pkg[p], " " md5[p] " ") ? "ok" : "mismatch") : "unpackaged"
      printf "%s\t%s\t%s\n", p, sha[p], c
    }
  }'"#,
    );
    s
}

const STANDARD: &[Standard] = &[
    Standard {
        name: "processes",
        columns: &["pid", "parent", "uid", "name", "path", "cmdline"],
        identity: &["name", "path", "cmdline", "uid"],
        volatile: &["pid", "parent"],
        description: "running processes: name, executable path (\" (deleted)\" when the file is gone, in both \
                      packs), command line, user",
        // osquery strips " (deleted)" from `path` and keeps it in `on_disk`: put it back.
        osquery: "SELECT pid AS pid, parent AS parent, uid AS uid, name AS name, \
                  CASE WHEN on_disk = 0 AND path != '' THEN path || ' (deleted)' ELSE path END AS path, \
                  cmdline AS cmdline FROM processes;",
        shell: PROCESSES_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "listening_ports",
        columns: &["pid", "port", "protocol", "family", "address", "name", "path"],
        identity: &["protocol", "port", "path"],
        volatile: &["pid"],
        description: "TCP and UDP listeners with the process that owns them (osquery also sees other network \
                      namespaces' listeners, a container's; the shell pack's ss only the host's)",
        osquery: "SELECT lp.pid AS pid, lp.port AS port, lp.protocol AS protocol, lp.family AS family, \
                  lp.address AS address, p.name AS name, p.path AS path \
                  FROM listening_ports lp LEFT JOIN processes p USING (pid) \
                  WHERE lp.family IN (2, 10) AND lp.port != 0;",
        shell: LISTENING_SH,
        format: OutputFormat::Ss,
    },
    Standard {
        name: "crontab",
        columns: &["event", "minute", "hour", "day_of_month", "month", "day_of_week", "command", "path"],
        identity: &["command", "path"],
        volatile: &[],
        description: "cron entries of the system and of every user (`command` with runs of spaces and tabs \
                      collapsed to one space, as osquery gives it)",
        osquery: "SELECT event AS event, minute AS minute, hour AS hour, day_of_month AS day_of_month, \
                  month AS month, day_of_week AS day_of_week, command AS command, path AS path FROM crontab;",
        shell: CRONTAB_SH,
        format: OutputFormat::Crontab,
    },
    Standard {
        name: "kernel_modules",
        columns: &["name", "size", "used_by", "status", "address"],
        identity: &["name"],
        volatile: &["size", "used_by", "address"],
        description: "loaded kernel modules",
        osquery: "SELECT name AS name, size AS size, used_by AS used_by, status AS status, address AS address \
                  FROM kernel_modules;",
        // A kernel built without module support has no /proc/modules: no modules is a fact, not a failure.
        shell: "[ -e /proc/modules ] || exit 0\ncat /proc/modules",
        format: OutputFormat::ProcModules,
    },
    Standard {
        name: "users",
        columns: &["username", "uid", "gid", "description", "directory", "shell"],
        identity: &["username"],
        volatile: &[],
        description: "local users from /etc/passwd",
        osquery: "SELECT username AS username, uid AS uid, gid AS gid, description AS description, \
                  directory AS directory, shell AS shell FROM users;",
        shell: "cat /etc/passwd",
        format: OutputFormat::Passwd,
    },
    Standard {
        name: "authorized_keys",
        columns: &["uid", "username", "key_file", "options", "algorithm", "key", "comment"],
        identity: &["key_file", "key"],
        volatile: &[],
        description: "SSH keys allowed to log in as each user (the same shell in both packs: osquery's \
                      authorized_keys skips ssh-dss and certificate lines)",
        osquery: "",
        shell: AUTHORIZED_KEYS_SH,
        format: OutputFormat::AuthorizedKeys,
    },
    Standard {
        name: "file_hashes",
        columns: &["path", "sha256", "package_check"],
        identity: &["path"],
        volatile: &[],
        description: "SHA-256 of key system binaries, and whether each matches the checksum its package recorded",
        osquery: "",
        shell: "",
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "shell_history",
        columns: &["username", "history_file"],
        identity: &["username", "history_file"],
        volatile: &[],
        description: "which users have shell history files (the same shell in both packs: osquery's \
                      shell_history gives a row per line, none for an empty file, and reads other file names)",
        osquery: "",
        shell: SHELL_HISTORY_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "suid_bin",
        columns: &["path", "username", "groupname", "permissions"],
        identity: &["path"],
        volatile: &[],
        description: "setuid and setgid binaries, `permissions` as `ls -l` shows them (the same shell in both \
                      packs: osquery's suid_bin searches no /opt, /usr/libexec, /var/tmp or /dev/shm, and says S/G/SG)",
        osquery: "",
        shell: SUID_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "persistence",
        columns: &["path", "kind", "target", "mode", "owner", "size", "sha256", "content"],
        identity: &["path"],
        volatile: &[],
        description: "files where persistence lives (cron, systemd, init, rc files, preload, PAM, sudoers, sshd, \
                      motd, udev, autostart, package hooks, modules), those that differ from a stock host \
                      (the same shell in both packs: no osquery table knows what the packages installed)",
        osquery: "",
        shell: PERSISTENCE_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "loaded_code",
        columns: &["pid", "name", "kind", "value"],
        identity: &["name", "kind", "value"],
        volatile: &["pid"],
        description: "shared objects mapped from outside the system library directories, and LD_PRELOAD, \
                      LD_LIBRARY_PATH, LD_AUDIT in process environments",
        osquery: "",
        shell: LOADED_CODE_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "file_capabilities",
        columns: &["path", "capabilities"],
        identity: &["path"],
        volatile: &[],
        description: "file capabilities (security.capability) in the binary and the writable directories",
        osquery: "",
        shell: FILE_CAPABILITIES_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "temp_files",
        columns: &["path", "kind", "mode", "owner", "size", "sha256"],
        identity: &["path"],
        volatile: &[],
        description: "executables, setuid/setgid files and hidden entries in the writable directories",
        osquery: "",
        shell: TEMP_FILES_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "shadow",
        columns: &["username", "password_state", "last_change", "max_days"],
        identity: &["username"],
        volatile: &[],
        description: "each account's password state (empty, locked, the hash's algorithm), never the hash",
        osquery: "",
        shell: SHADOW_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "hidden_processes",
        columns: &["pid", "name", "path", "cmdline"],
        identity: &["name", "path", "cmdline"],
        volatile: &["pid"],
        description: "processes hidden from the /proc listing (reachable by pid, not listed)",
        osquery: "",
        shell: HIDDEN_PROCESSES_SH,
        format: OutputFormat::Tsv,
    },
    Standard {
        name: "startup_items",
        columns: &["name", "path", "source", "status"],
        identity: &["name", "path"],
        volatile: &[],
        description: "services and scripts enabled at boot, from the unit and init files (the same shell in \
                      both packs: osquery's startup_items lists loaded units through D-Bus, none without it)",
        osquery: "",
        shell: STARTUP_SH,
        format: OutputFormat::Tsv,
    },
];

// Files of installed packages that differ from the package database: what
// `dpkg --verify` or `rpm -Va` reports (content, mode, owner; `missing`),
// one row per file, at the lowest CPU and I/O priority (the host is in
// production). It reads every packaged file, tens of seconds on a large
// `/usr`: the deep pack only, under its own time limit. 5,000 rows at most;
// the rest are counted as unseen.
const PACKAGE_INTEGRITY_SH: &str = r#"printf 'path\tflags\tattribute\tmanager\n'
low=
command -v nice >/dev/null 2>&1 && low='nice -n 19'
command -v ionice >/dev/null 2>&1 && ionice -c 3 true 2>/dev/null && low="$low ionice -c 3"
if command -v dpkg >/dev/null 2>&1 && [ -d /var/lib/dpkg/info ]; then
  m=dpkg; set -- dpkg --verify
elif command -v rpm >/dev/null 2>&1; then
  # A changed modification time alone is what every copy does.
  m=rpm; set -- rpm -Va --nomtime
else
  printf 'diffy-unseen\tno package database (neither dpkg nor rpm)\n' >&2; exit 0
fi
# Both print the flags, the attribute when there is one (c: a configuration
# file), then the path: `??5??????   /usr/bin/x`, `missing   c /etc/y`.
$low "$@" 2>/dev/null | awk -v m="$m" '
  { f = $1; r = substr($0, length(f) + 1); sub(/^ +/, "", r); a = ""
    if (r ~ /^[cdglr] +\//) { a = substr(r, 1, 1); r = substr(r, 2); sub(/^ +/, "", r) }
    if (r !~ /^\//) next
    gsub(/\t/, " ", r); n++
    if (n <= 5000) print r "\t" f "\t" a "\t" m }
  END { if (n > 5000) printf "diffy-unseen\t%d more files that differ from their package (5000 listed)\n", n - 5000 | "cat 1>&2" }'"#;

/// The deep pack's time limit for `package_integrity` alone.
pub const PACKAGE_INTEGRITY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A host deadline that leaves the deep pack room: its standard queries, then
/// `package_integrity` up to [`PACKAGE_INTEGRITY_TIMEOUT`].
pub const DEEP_HOST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(480);

/// Queries of the deep pack only: too slow for every run.
const DEEP: &[Standard] = &[Standard {
    name: "package_integrity",
    columns: &["path", "flags", "attribute", "manager"],
    identity: &["path"],
    volatile: &[],
    description: "files of installed packages that differ from the package database (`dpkg --verify`, \
                  `rpm -Va --nomtime`; the same shell in both packs: no osquery table verifies packages), \
                  at the lowest CPU and I/O priority, under its own time limit",
    osquery: "",
    shell: PACKAGE_INTEGRITY_SH,
    format: OutputFormat::Tsv,
}];

fn all_standard() -> impl Iterator<Item = &'static Standard> {
    STANDARD.iter().chain(DEEP)
}

fn deep_query(s: &Standard, osquery: bool) -> Query {
    let mut q = standard_query(s, osquery);
    q.timeout = Some(PACKAGE_INTEGRITY_TIMEOUT);
    q
}

fn standard_query(s: &Standard, osquery: bool) -> Query {
    // A query without SQL asks osquery's hosts the shell way (no table holds
    // it: osquery's `hash` has no package checksums).
    let via_osquery = osquery && !s.osquery.is_empty();
    let shell = if s.name == "file_hashes" { file_hashes_sh() } else { s.shell.to_string() };
    // The shell form, with its probe of what it could not read where it has one.
    let shell = match probe_of(s.name) {
        Some((probe, ShellChecks::Probe)) => format!("( {probe}\n) </dev/null\n{shell}"),
        _ => shell,
    };
    let mut q = if via_osquery {
        let sql = s.osquery.to_string();
        match probe_of(s.name).map(|(probe, _)| crate::query::osqueryi_command(&sql, Some(probe))) {
            // osqueryi's exit status is the query's; the probe only adds
            // diffy-unseen lines to its standard error.
            Some(Ok(sh)) => Query::shell(s.name, sh, OutputFormat::Json),
            _ => Query::osquery(s.name, sql),
        }
    } else if osquery {
        // The osquery pack needs osqueryi on every host; without it, these
        // fail as its other queries do (exit 127), not answer alone.
        let sh = format!(
            "command -v osqueryi >/dev/null 2>&1 || {{ echo 'osqueryi: command not found' >&2; exit 127; }}\n{shell}"
        );
        Query::shell(s.name, sh, s.format)
    } else {
        Query::shell(s.name, shell, s.format)
    };
    q = q.identity(s.identity.iter().copied()).volatile(s.volatile.iter().copied()).describe(s.description);
    q
}

/// The columns every row of the standard query `name` has, in both packs.
pub fn row_shape(name: &str) -> Option<&'static [&'static str]> {
    all_standard().find(|s| s.name == name).map(|s| s.columns)
}

/// The osquery SQL of the standard pack, by query name: the queries osquery
/// answers with its own tables (the others are the same shell in both packs).
pub fn osquery_statements() -> impl Iterator<Item = (&'static str, &'static str)> {
    STANDARD.iter().filter(|s| !s.osquery.is_empty()).map(|s| (s.name, s.osquery))
}

/// The standard pack's query named `name` (shell form), if there is one; used
/// to normalise evidence imported from elsewhere under the same names.
pub fn standard_query_named(name: &str) -> Option<Query> {
    STANDARD
        .iter()
        .find(|s| s.name == name)
        .map(|s| standard_query(s, false))
        .or_else(|| DEEP.iter().find(|s| s.name == name).map(|s| deep_query(s, false)))
}

/// The standard pack as osquery SQL, run with `osqueryi --json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsqueryPayload;

impl OsqueryPayload {
    /// The pack's spec.
    pub fn pack() -> PayloadSpec {
        PayloadSpec {
            name: "osquery".into(),
            setup: None,
            queries: STANDARD.iter().map(|s| standard_query(s, true)).collect(),
            teardown: None,
        }
    }
}

impl OsqueryPayload {
    /// The deep pack: the standard pack, then the queries too slow for every
    /// run (`package_integrity`), each under its own time limit. Give hosts
    /// [`DEEP_HOST_DEADLINE`].
    pub fn deep_pack() -> PayloadSpec {
        let mut spec = Self::pack();
        spec.name = "osquery-deep".into();
        spec.queries.extend(DEEP.iter().map(|s| deep_query(s, true)));
        spec
    }
}

impl Payload for OsqueryPayload {
    fn name(&self) -> &str {
        "osquery"
    }

    fn spec(&self, _ctx: &PayloadContext) -> Result<PayloadSpec> {
        Ok(Self::pack())
    }
}

/// The standard pack as POSIX shell (`/proc`, `ss`, `/etc/passwd`, crontabs,
/// `sha256sum`), for hosts without osquery; parsed into rows on the collecting side.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShellPayload;

impl ShellPayload {
    /// The pack's spec.
    pub fn pack() -> PayloadSpec {
        PayloadSpec {
            name: "shell".into(),
            setup: None,
            queries: STANDARD.iter().map(|s| standard_query(s, false)).collect(),
            teardown: None,
        }
    }
}

impl ShellPayload {
    /// The deep pack: the standard pack, then the queries too slow for every
    /// run (`package_integrity`), each under its own time limit. Give hosts
    /// [`DEEP_HOST_DEADLINE`].
    pub fn deep_pack() -> PayloadSpec {
        let mut spec = Self::pack();
        spec.name = "shell-deep".into();
        spec.queries.extend(DEEP.iter().map(|s| deep_query(s, false)));
        spec
    }
}

/// The deep pack of either kind ([`ShellPayload::deep_pack`],
/// [`OsqueryPayload::deep_pack`]): the standard queries, then
/// `package_integrity` (`dpkg --verify`, `rpm -Va`), which reads every
/// packaged file. Run it on the few hosts worth it, with
/// [`DEEP_HOST_DEADLINE`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DeepPayload {
    /// The standard queries through osquery (`osquery-deep`), or shell (`shell-deep`).
    pub osquery: bool,
}

impl Payload for DeepPayload {
    fn name(&self) -> &str {
        if self.osquery { "osquery-deep" } else { "shell-deep" }
    }

    fn spec(&self, _ctx: &PayloadContext) -> Result<PayloadSpec> {
        Ok(if self.osquery { OsqueryPayload::deep_pack() } else { ShellPayload::deep_pack() })
    }
}

impl Payload for ShellPayload {
    fn name(&self) -> &str {
        "shell"
    }

    fn spec(&self, _ctx: &PayloadContext) -> Result<PayloadSpec> {
        Ok(Self::pack())
    }
}

/// A payload read from a TOML file of `[[query]]` tables (see [`PayloadSpec::from_toml`]).
#[derive(Clone, Debug)]
pub struct FilePayload {
    spec: PayloadSpec,
}

impl FilePayload {
    /// Reads and validates the file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("file payload", "read", path, e))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("payload");
        Ok(Self { spec: PayloadSpec::from_toml(&text, name)? })
    }

    /// Wraps a spec.
    pub fn from_spec(spec: PayloadSpec) -> Result<Self> {
        spec.validate()?;
        Ok(Self { spec })
    }
}

impl Payload for FilePayload {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn spec(&self, _ctx: &PayloadContext) -> Result<PayloadSpec> {
        Ok(self.spec.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_valid_and_parallel() {
        let o = OsqueryPayload::pack();
        let s = ShellPayload::pack();
        o.validate().unwrap();
        s.validate().unwrap();
        let names = |p: &PayloadSpec| p.queries.iter().map(|q| q.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&o), names(&s));
        assert_eq!(o.queries.len(), STANDARD.len());
        assert!(standard_query_named("users").is_some());
        assert!(standard_query_named("nope").is_none());
    }

    /// An attacker picks a binary's name: a tab or a line break in it must
    /// not shift the columns of the processes and listening_ports rows.
    #[cfg(target_os = "linux")]
    #[test]
    fn odd_executable_names_keep_the_columns() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("we\tird\nname");
        std::fs::copy("/bin/sleep", &odd).unwrap();
        // Another test's fork can briefly hold the copy open for writing
        // (until its exec closes it), so exec may see ETXTBSY: try again.
        let spawn = || Command::new(&odd).arg("30").stdin(Stdio::null()).spawn();
        let mut child = (0..50)
            .find_map(|_| match spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                other => Some(other),
            })
            .expect("the copy stays busy for a second")
            .unwrap();
        let pid = child.id().to_string();
        let Some(crate::query::QueryCommand::Shell(query)) =
            standard_query_named("processes").map(|q| q.command.clone())
        else {
            panic!("the processes query is a shell query")
        };
        for shell in ["/bin/sh", "dash", "bash"] {
            let Ok(out) = Command::new(shell).arg("-c").arg(&query).stdin(Stdio::null()).output() else { continue };
            let text = String::from_utf8_lossy(&out.stdout);
            let row = text
                .lines()
                .find(|l| l.split('\t').next() == Some(pid.as_str()))
                .unwrap_or_else(|| panic!("{shell}: no row for pid {pid} in\n{text}"));
            let cols: Vec<&str> = row.split('\t').collect();
            assert_eq!(cols.len(), 6, "{shell}: {row:?}");
            assert_eq!(cols[3], "we ird\\nname", "{shell}: the name, with /proc's escape of the line break");
            assert_eq!(cols[4], format!("{}/we ird name", dir.path().display()), "{shell}: the path, blanked");
            assert!(cols[5].starts_with(cols[4]), "{shell}: the cmdline {:?}", cols[5]);
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
