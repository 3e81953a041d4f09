//! The exit-code policy, in one place: what each outcome of a command
//! returns, the `--max-failed` budget, and the "no host could be collected"
//! error.
//!
//! | code | when |
//! |---:|---|
//! | 0 | nothing found (or, for `collect`/`baseline`, every host collected) |
//! | 1 | outliers found, whatever else failed: they need acting on |
//! | 2 | trouble: an unusable argument, no host collected, more hosts not covered than `--max-failed` allows |
//! | 3 | nothing found, but no analysed host's evidence could see everything (collected without root, say) |
//! | 130 | interrupted (what arrived was kept) |

use std::io::Write;

#[cfg(feature = "analysis")]
use diffy_core::QueryStatus;
#[cfg(feature = "analysis")]
use diffy_core::report::{Outcome, Report};
use diffy_core::{RunManifest, RunState};

use crate::cli::CoverageArgs;
use crate::error::{CliError, CliResult};

// The report's codes are its `Outcome::exit_code`; these name them.

/// Exit code: nothing found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: outliers found.
pub const EXIT_OUTLIERS: u8 = 1;
/// Exit code: trouble (an unusable argument, no host collected, an error).
pub const EXIT_TROUBLE: u8 = 2;
/// Exit code: nothing found, but no analysed host's evidence could see
/// everything the payload asks (collected without root, say).
pub const EXIT_PARTIAL_VIEW: u8 = 3;
/// Exit code: interrupted by Ctrl-C (what arrived was kept).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The failure budget of `--max-failed` (a count, or a percentage of the
/// targeted hosts); 10 % when not given.
pub(crate) fn max_failed(a: &CoverageArgs, targeted: usize) -> CliResult<usize> {
    let spec = a.max_failed.as_deref().unwrap_or("10%").trim();
    let bad = || {
        CliError::new(
            format!("--max-failed {spec:?} is neither a count nor a percentage"),
            "give a number of hosts (5) or a percentage of the targeted hosts (10%)",
        )
    };
    match spec.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            // Rounded up: one lost host of a small fleet is not yet heavy failure.
            Ok((targeted as f64 * p / 100.0).ceil() as usize)
        }
        None => spec.parse().map_err(|_| bad()),
    }
}

/// Exit 2 when more hosts failed or never reported than the budget allows,
/// saying so on standard error (what was printed is kept).
pub(crate) fn over_budget(a: &CoverageArgs, targeted: usize, not_covered: usize) -> CliResult<Option<u8>> {
    let budget = max_failed(a, targeted)?;
    if not_covered > budget {
        let _ = writeln!(
            std::io::stderr(),
            "error: {not_covered} of {targeted} targeted hosts were not covered (failed or never reported), more than \
             --max-failed allows ({budget}); see their statuses above, or raise --max-failed"
        );
        return Ok(Some(EXIT_TROUBLE));
    }
    Ok(None)
}

/// The exit code of a collection (`collect`, `baseline`): interrupted, no
/// host collected (an error naming where the statuses are), more hosts lost
/// than `--max-failed` allows, or clean.
pub(crate) fn for_run(m: &RunManifest, budget: Option<&CoverageArgs>, evidence: &str) -> CliResult<u8> {
    if m.state == RunState::Interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    if m.counts.collected == 0 {
        return Err(no_host_collected(m.target.as_str(), false, Some(evidence)));
    }
    if let Some(a) = budget {
        if let Some(code) = over_budget(a, m.counts.targeted, m.counts.failed + m.counts.missing)? {
            return Ok(code);
        }
    }
    Ok(EXIT_CLEAN)
}

/// Where a report came from, for its exit code.
#[cfg(feature = "analysis")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Analysed {
    /// Collected by this command; `interrupted` when Ctrl-C stopped it.
    Collected { interrupted: bool },
    /// A stored run (`--from`) or imported evidence (`--import`).
    Stored,
}

/// The exit code of a report: outliers 1, whatever else failed; a run this
/// command collected that Ctrl-C stopped and that found nothing 130, and one
/// that collected no host an error (with advice when osqueryi was missing);
/// nothing analysed 2; more hosts not covered than `--max-failed` allows 2;
/// a partial view 3; clean 0.
#[cfg(feature = "analysis")]
pub(crate) fn for_report(r: &Report, budget: &CoverageArgs, source: Analysed) -> CliResult<u8> {
    let outliers = r.outcome() == Outcome::Outliers;
    if let Analysed::Collected { interrupted } = source {
        if interrupted && !outliers {
            return Ok(EXIT_INTERRUPTED);
        }
        if r.coverage.collected == 0 {
            // An osquery payload whose queries' command was not found: no osqueryi.
            let run = r.run.as_ref();
            let osquery = run.and_then(|run| run.payload.as_deref()).is_some_and(|p| p.starts_with("osquery"));
            let missing =
                r.hosts.iter().flat_map(|h| &h.failed_queries).any(|f| f.status == QueryStatus::CommandNotFound);
            let target = run.map_or("the target", |run| run.target.as_str());
            return Err(no_host_collected(target, osquery && missing, None));
        }
    }
    let code = r.outcome().exit_code();
    // Outliers stay 1: they need acting on whatever else failed.
    let c = &r.coverage;
    match over_budget(budget, c.targeted, c.failed + c.missing)? {
        Some(trouble) if code != EXIT_OUTLIERS => Ok(trouble),
        _ => Ok(code),
    }
}

/// "No host of TARGET could be collected", with what to do: install nothing
/// and use the shell pack when osqueryi was missing, else look at the hosts'
/// statuses (in `evidence`, or printed above).
pub(crate) fn no_host_collected(target: &str, osquery_missing: bool, evidence: Option<&str>) -> CliError {
    let help = if osquery_missing {
        "osqueryi is not installed on these hosts: use --payload shell, which needs only a POSIX shell".to_string()
    } else {
        let where_ = evidence.map_or_else(|| "above".to_string(), |e| format!("in {e}"));
        format!("see the hosts' statuses {where_}; check connectivity, credentials and the deadline")
    };
    CliError::new(format!("no host of {target} could be collected"), help)
}

#[cfg(all(test, feature = "analysis"))]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_outcomes_codes() {
        assert_eq!(Outcome::Clean.exit_code(), EXIT_CLEAN);
        assert_eq!(Outcome::Outliers.exit_code(), EXIT_OUTLIERS);
        assert_eq!(Outcome::NothingAnalysed.exit_code(), EXIT_TROUBLE);
        assert_eq!(Outcome::PartialView.exit_code(), EXIT_PARTIAL_VIEW);
    }
}
