//! How many hosts this process can work on at once without losing one to a
//! resource limit.
//!
//! A transport that runs a child per host (`local`, `ssh`) holds a few
//! descriptors and processes for every host in flight ([`HostCost`]). The
//! engine asks [`fit_concurrency`] before a run: past the soft limits on open
//! files (`RLIMIT_NOFILE`) and processes (`RLIMIT_NPROC`), hosts would fail
//! with "Too many open files" or "Resource temporarily unavailable", so it runs
//! fewer at once and says why. The run's manifest keeps what was asked, what
//! ran and the reason ([`crate::run::RunLimits`]).

use crate::collection::HostCost;

/// Descriptors kept aside for the store, the runtime and the terminal.
const SPARE_DESCRIPTORS: u64 = 64;
/// Processes kept aside for everything else this user runs.
const SPARE_PROCESSES: u64 = 16;

/// The limits that bound concurrency, as this process has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcessLimits {
    /// The soft limit on open files; `None`: unlimited or unknown.
    pub(crate) open_files: Option<u64>,
    /// The soft limit on processes and the tasks this user already runs;
    /// `None`: unlimited, not enforced (root) or unknown.
    pub(crate) processes: Option<(u64, u64)>,
}

impl ProcessLimits {
    /// This process's limits, read now.
    pub(crate) fn current() -> Self {
        use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
        let soft = |r| getrlimit(r).ok().map(|(s, _)| s).filter(|&s| s != RLIM_INFINITY);
        let open_files = soft(Resource::RLIMIT_NOFILE);
        // The kernel does not hold root (CAP_SYS_RESOURCE) to RLIMIT_NPROC.
        let processes = if nix::unistd::Uid::effective().is_root() {
            None
        } else {
            soft(Resource::RLIMIT_NPROC).map(|limit| (limit, tasks_of(nix::unistd::Uid::current().as_raw())))
        };
        Self { open_files, processes }
    }
}

/// Tasks (threads count against `RLIMIT_NPROC`) that processes of `uid` run.
fn tasks_of(uid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| std::fs::read_dir(e.path().join("task")).map_or(1, |t| t.count() as u64))
        .sum()
}

/// Concurrency once fitted to the limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fitted {
    /// Hosts to run at once.
    pub(crate) concurrency: usize,
    /// Why that is fewer than asked, if it is.
    pub(crate) capped: Option<String>,
}

/// The most hosts, up to `requested`, that can run at once when each holds
/// `cost` within `limits`; at least 1.
pub(crate) fn fit_concurrency(requested: usize, cost: HostCost, limits: ProcessLimits) -> Fitted {
    let requested = requested.max(1);
    let hosts = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(1);
    // Per limit: how many hosts fit, what they need more of, how to raise it.
    let files = limits.open_files.filter(|_| cost.descriptors > 0).map(|files| {
        let fits = hosts(files.saturating_sub(SPARE_DESCRIPTORS) / cost.descriptors);
        (fits, format!("more open files than the limit of {files} allows"), "`ulimit -Hn`")
    });
    let processes = limits.processes.filter(|_| cost.processes > 0).map(|(limit, used)| {
        let fits = hosts(limit.saturating_sub(used).saturating_sub(SPARE_PROCESSES) / cost.processes);
        (
            fits,
            format!("more processes than the limit of {limit} allows with {used} already running as this user"),
            "`ulimit -u`",
        )
    });
    // The tighter limit wins; open files on a tie.
    match [files, processes].into_iter().flatten().filter(|(fits, ..)| *fits < requested).min_by_key(|(fits, ..)| *fits)
    {
        None => Fitted { concurrency: requested, capped: None },
        Some((fits, need, raise)) => Fitted {
            concurrency: fits,
            capped: Some(format!(
                "{requested} hosts at once need {need}; running {fits} at once (raise {raise} to run more)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: HostCost = HostCost::new(4, 2);

    #[test]
    fn open_files_cap_concurrency_and_say_why() {
        let f = fit_concurrency(500, CHILD, ProcessLimits { open_files: Some(120), processes: None });
        assert_eq!(f.concurrency, 14);
        assert_eq!(
            f.capped.as_deref(),
            Some(
                "500 hosts at once need more open files than the limit of 120 allows; running 14 at once (raise `ulimit -Hn` to run more)"
            )
        );
    }

    #[test]
    fn processes_cap_concurrency_after_what_is_already_running() {
        let f = fit_concurrency(500, CHILD, ProcessLimits { open_files: Some(1 << 20), processes: Some((400, 100)) });
        assert_eq!(f.concurrency, 142, "(400 - 100 - 16) / 2");
        assert!(f.capped.unwrap().contains("limit of 400 allows with 100 already running"));
    }

    #[test]
    fn the_tighter_limit_wins_and_room_enough_changes_nothing() {
        let both = ProcessLimits { open_files: Some(1024), processes: Some((200, 10)) };
        assert_eq!(fit_concurrency(500, CHILD, both).concurrency, 87, "processes: (200 - 10 - 16) / 2");
        assert_eq!(fit_concurrency(50, CHILD, both), Fitted { concurrency: 50, capped: None });
        let unlimited = ProcessLimits::default();
        assert_eq!(fit_concurrency(10_000, CHILD, unlimited).concurrency, 10_000);
    }

    #[test]
    fn a_transport_that_holds_nothing_here_is_never_capped() {
        let tight = ProcessLimits { open_files: Some(100), processes: Some((50, 49)) };
        assert_eq!(fit_concurrency(10_000, HostCost::NONE, tight).concurrency, 10_000);
        assert_eq!(fit_concurrency(10, CHILD, tight).concurrency, 1, "never below one");
    }

    #[test]
    fn this_process_limits_can_be_read() {
        let l = ProcessLimits::current();
        assert!(l.open_files.is_none_or(|n| n > 0), "{l:?}");
    }
}
