//! Starting a host's child process without losing the host to a passing
//! shortage of descriptors or processes.

use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Whether `e` is a shortage that passes as other hosts finish: too many
/// open files (this process's or the system's), or processes (`EAGAIN`).
pub fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE | nix::errno::Errno::EAGAIN)
    )
}

/// Spawns `cmd`; while that fails for a passing shortage ([`is_transient`]),
/// waits (50 ms, doubling to 1 s) and tries again, until `until`. Returns
/// the last error otherwise, and how many attempts failed before.
pub async fn spawn_patiently(cmd: &mut Command, until: Instant) -> (std::io::Result<Child>, u32) {
    let mut pause = Duration::from_millis(50);
    let mut failed = 0;
    loop {
        match cmd.spawn() {
            Err(e) if is_transient(&e) && Instant::now() + pause < until => {
                failed += 1;
                tracing::debug!("cannot start a child yet ({e}); trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return (other, failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn shortages_are_transient_other_errors_are_not() {
        for errno in [libc_emfile(), 23, 11] {
            assert!(is_transient(&std::io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!is_transient(&std::io::Error::from_raw_os_error(2)), "ENOENT is not");
        assert!(!is_transient(&std::io::Error::other("x")));
    }

    fn libc_emfile() -> i32 {
        nix::errno::Errno::EMFILE as i32
    }
}
