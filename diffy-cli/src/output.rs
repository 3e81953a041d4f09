//! What the command line prints: a progress bar on stderr, JSON Lines events,
//! and text renderings of reports, runs and plugins.

use std::io::{self, Write};
use std::sync::Mutex;

use diffy_core::engine::{Event, EventSink};
use diffy_core::report::{CohortKind, FindingKind, Method, Presence, Report};
use diffy_core::{HostStatus, RunManifest, RunState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::registry::PluginInfo;

/// Receives engine events: drives the progress bar (drawn only when stderr is
/// a terminal) and, for `--format jsonl`, writes every event as a line.
pub struct CliSink {
    progress: ProgressBar,
    jsonl: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for CliSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliSink").field("jsonl", &self.jsonl.is_some()).finish()
    }
}

impl CliSink {
    /// A sink; `jsonl` receives events as JSON Lines.
    pub fn new(jsonl: Option<Box<dyn Write + Send>>) -> Self {
        let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        progress.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} hosts {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        Self { progress, jsonl: jsonl.map(Mutex::new) }
    }

    /// Writes one JSON Lines record `{"type": .., "data": ..}`.
    pub fn line<T: Serialize>(&self, kind: &str, data: &T) -> io::Result<()> {
        if let Some(w) = &self.jsonl {
            let mut w = w.lock().expect("the output lock is not poisoned");
            #[derive(Serialize)]
            struct Line<'a, T> {
                r#type: &'a str,
                data: &'a T,
            }
            serde_json::to_writer(&mut *w, &Line { r#type: kind, data })?;
            w.write_all(b"\n")?;
            w.flush()?;
        }
        Ok(())
    }

    /// Hides the progress bar.
    pub fn finish(&self) {
        self.progress.finish_and_clear();
    }
}

impl EventSink for CliSink {
    fn event(&self, event: &Event) {
        match event {
            Event::RunStarted(r) => {
                if let Some(why) = &r.concurrency_capped {
                    self.progress.suspend(|| {
                        let _ = writeln!(io::stderr(), "warning: {why}");
                    });
                }
                self.progress.set_length(r.hosts as u64);
                self.progress.set_prefix(format!("{} {}", r.kind, r.target));
            }
            Event::HostFinished(h) => {
                self.progress.inc(1);
                if h.status != HostStatus::Ok {
                    self.progress.set_message(format!("(last problem: {} {})", h.host, h.status));
                }
            }
            Event::RunFinished(_) => self.progress.finish_and_clear(),
            _ => {}
        }
        if let Some(w) = &self.jsonl {
            let mut w = w.lock().expect("the output lock is not poisoned");
            // A reader that went away (a closed pipe) must not stop the run.
            let _ = serde_json::to_writer(&mut *w, event).map_err(io::Error::from).and_then(|()| {
                w.write_all(b"\n")?;
                w.flush()
            });
        }
    }
}

fn methods(ms: &[Method]) -> String {
    ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("+")
}

fn kind(k: FindingKind) -> &'static str {
    k.as_str()
}

/// Whether a terminal could act on `c` or show it as something else: C0 and
/// C1 controls and DEL (cursor moves, screen clears, a carriage return that
/// overwrites a line), bidirectional overrides and isolates (text shown in
/// another order than it is), and invisible separators.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Host text made safe for a terminal: every control, bidi and invisible
/// character written as an escape (`\n`, `\x1b`, `\u{202e}`), and at most
/// `max` characters shown. Rows, messages and explanations come from hosts
/// that may be the attacker's.
pub fn term(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 2));
    for (shown, c) in s.chars().enumerate() {
        if shown == max {
            out.push('…');
            break;
        }
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The same check over a whole rendering, line breaks allowed: whatever a
/// renderer forgot to pass through [`term`] still cannot reach the terminal.
fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && unsafe_char(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if c != '\n' && unsafe_char(c) { c.escape_debug().to_string() } else { c.to_string() })
            .collect(),
    )
}

/// The longest explanation or message shown in a text report (`--format
/// json` has them whole).
const SHOWN: usize = 300;

/// Renders a report for people (host text escaped and shortened, see [`term`]).
pub fn report(out: &mut dyn Write, r: &Report, evidence: Option<&str>, show: usize) -> io::Result<()> {
    let mut text = Vec::with_capacity(4096);
    render_report(&mut text, r, evidence, show)?;
    out.write_all(terminal_safe(&String::from_utf8_lossy(&text)).as_bytes())
}

/// What the evidence could not see, first, so that "no outliers" is read
/// with it.
fn visibility(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let v = &r.visibility;
    if v.partial == 0 {
        return Ok(());
    }
    writeln!(out, "Could not see everything on {} of {} analysed hosts:", v.partial, r.coverage.collected)?;
    for g in v.collected_as.iter().filter(|g| !g.limits.is_empty()) {
        let more = if g.hosts > g.examples.len() { ", …" } else { "" };
        writeln!(
            out,
            "  {}: {} host{} ({}{more})",
            g.limits.join("; "),
            g.hosts,
            if g.hosts == 1 { "" } else { "s" },
            g.examples.join(", ")
        )?;
    }
    for q in &v.queries {
        let more = if q.unseen > q.first.len() {
            format!(" (… {} items over {} host{})", q.unseen, q.hosts, if q.hosts == 1 { "" } else { "s" })
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {} could not read, on {} host{}: {}{more}",
            q.query,
            q.hosts,
            if q.hosts == 1 { "" } else { "s" },
            q.first.join(", ")
        )?;
    }
    if let Some(a) = &v.advice {
        writeln!(out, "  Nothing hidden is reported missing; {a}.")?;
    }
    Ok(())
}

/// At most six host ids, then how many more.
fn some_hosts(hosts: &[String]) -> String {
    if hosts.len() <= 6 { hosts.join(", ") } else { format!("{}, … {} more", hosts[..5].join(", "), hosts.len() - 5) }
}

/// The same security-relevant rows on several hosts: before the outliers,
/// fleet-wide ones first, because a mass compromise is read before its hosts.
fn campaigns(out: &mut dyn Write, r: &Report, show: usize) -> io::Result<()> {
    if r.campaigns.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{} campaign{} (the same security-relevant rows on several hosts, no deploy explains them):",
        r.campaigns.len(),
        if r.campaigns.len() == 1 { "" } else { "s" }
    )?;
    for c in r.campaigns.iter().take(show * 4) {
        writeln!(
            out,
            "  {}{}: {} of {} hosts ({})",
            c.id,
            if c.fleet_wide { " FLEET-WIDE" } else { "" },
            c.prevalence.hosts,
            c.prevalence.of,
            some_hosts(&c.hosts)
        )?;
        for row in c.rows.iter().take(show) {
            let text: Vec<String> = row.row.iter().map(|(k, v)| format!("{}={}", term(k, 40), term(v, 60))).collect();
            let why = row.indicators.first().map(|i| format!("  [{}]", term(i, 80))).unwrap_or_default();
            writeln!(
                out,
                "     {} on {} of {}: {} {}{why}",
                kind(row.kind),
                row.prevalence.hosts,
                row.prevalence.of,
                row.query,
                text.join(" ")
            )?;
        }
        if c.rows.len() > show {
            writeln!(out, "     … {} more rows", c.rows.len() - show)?;
        }
    }
    if r.campaigns.len() > show * 4 {
        writeln!(out, "  … {} more (--format json)", r.campaigns.len() - show * 4)?;
    }
    writeln!(out)
}

fn render_report(out: &mut dyn Write, r: &Report, evidence: Option<&str>, show: usize) -> io::Result<()> {
    match &r.run {
        Some(run) => {
            write!(out, "Diffy report: target {}, run {} ({}", run.target, run.id, run.kind)?;
            if let Some(p) = &run.payload {
                write!(out, ", payload {}", term(p, 40))?;
            }
            if let Some(i) = &run.incident_id {
                write!(out, ", incident {i}")?;
            }
            if run.state != RunState::Complete {
                write!(out, ", {}", if run.state == RunState::Interrupted { "INTERRUPTED" } else { "NOT FINISHED" })?;
            }
            if r.partial_view() {
                write!(out, ", PARTIAL VIEW")?;
            }
            if run.concurrency_capped.is_some() {
                write!(out, ", {} HOSTS AT ONCE", run.concurrency.unwrap_or(1))?;
            }
            let not_covered = r.coverage.failed + r.coverage.missing;
            if not_covered > 0 {
                write!(out, ", {not_covered} of {} hosts NOT COVERED", r.coverage.targeted)?;
            }
            writeln!(out, ")")?;
        }
        None => writeln!(
            out,
            "Diffy report: imported from {}{}",
            r.imported_from.as_deref().unwrap_or("?"),
            if r.partial_view() { " (PARTIAL VIEW)" } else { "" }
        )?,
    }
    visibility(out, r)?;
    writeln!(
        out,
        "Methods: {}. Outlier threshold: score {}.",
        if r.methods.is_empty() { "none".into() } else { methods(&r.methods) },
        r.threshold
    )?;
    let c = &r.coverage;
    let missing = c.failed + c.missing;
    if missing == 0 {
        writeln!(out, "Coverage: {} of {} targeted hosts analysed.", c.collected, c.targeted)?;
    } else {
        writeln!(
            out,
            "Coverage: {} of {} targeted hosts analysed; {} NOT analysed (listed below).",
            c.collected, c.targeted, missing
        )?;
    }
    if c.not_targeted > 0 {
        writeln!(out, "Left out before collection: {} hosts (listed below).", c.not_targeted)?;
    }
    if let Some(why) = r.run.as_ref().and_then(|run| run.concurrency_capped.as_deref()) {
        writeln!(out, "Concurrency: {}.", term(why, 300))?;
    }
    writeln!(out)?;

    campaigns(out, r, show)?;

    let outliers: Vec<_> = r.outliers().collect();
    if outliers.is_empty() {
        if r.partial_view() {
            writeln!(
                out,
                "No outliers among {} hosts in what their evidence could see, which is not everything (above).",
                c.collected
            )?;
        } else if missing == 0 {
            writeln!(out, "No outliers among {} hosts.", c.collected)?;
        } else {
            writeln!(
                out,
                "No outliers among the {} hosts analysed; {} hosts were not analysed.",
                c.collected, missing
            )?;
        }
    } else {
        writeln!(
            out,
            "{} outlier{} of {} hosts:",
            outliers.len(),
            if outliers.len() == 1 { "" } else { "s" },
            c.collected
        )?;
        for h in &outliers {
            writeln!(out)?;
            write!(out, "  #{} {}  score {}", h.rank.unwrap_or(0), h.host, h.score)?;
            let groups: Vec<&str> = h.campaigns.iter().chain(&h.cohorts).map(String::as_str).collect();
            if !groups.is_empty() {
                write!(out, "  (in {})", groups.join(", "))?;
            }
            writeln!(out)?;
            for f in h.findings.iter().take(show) {
                writeln!(
                    out,
                    "    {:>5.1}  {:<8} {:<18} {}",
                    f.score,
                    kind(f.kind),
                    methods(&f.methods),
                    term(&f.explanation, SHOWN)
                )?;
            }
            if h.findings.len() > show {
                writeln!(out, "           … {} more findings (--show N, or --format json)", h.findings.len() - show)?;
            }
            if h.suppressed > 0 {
                writeln!(out, "           {} findings suppressed", h.suppressed)?;
            }
        }
    }

    if !r.cohorts.is_empty() {
        writeln!(out)?;
        writeln!(out, "Cohorts (hosts that differ together, e.g. a canary; not scored):")?;
        for co in &r.cohorts {
            let what = match (&co.kind, &co.explained_by) {
                (CohortKind::Deploy, Some(label)) => format!("deploy, {}", term(label, 80)),
                _ => "UNEXPLAINED: no label sets these hosts apart".to_string(),
            };
            writeln!(
                out,
                "  {}: {} of {} hosts ({}), {} rows; {what}",
                co.id,
                co.prevalence.hosts,
                co.prevalence.of,
                some_hosts(&co.hosts),
                co.rows.len()
            )?;
            for row in co.rows.iter().take(show) {
                let sign = if row.presence == Presence::Present { "+" } else { "-" };
                let text: Vec<String> =
                    row.row.iter().map(|(k, v)| format!("{}={}", term(k, 40), term(v, 60))).collect();
                writeln!(out, "     {sign} {} {}", row.query, text.join(" "))?;
            }
            if co.rows.len() > show {
                writeln!(out, "     … {} more rows", co.rows.len() - show)?;
            }
        }
    }

    if !r.drift.is_empty() {
        writeln!(out)?;
        writeln!(out, "Fleet-wide differences (most hosts; reported once):")?;
        for d in r.drift.iter().take(show * 4) {
            writeln!(out, "  {:<8} {:<9} {}", kind(d.kind), d.method.as_str(), term(&d.explanation, SHOWN))?;
        }
        if r.drift.len() > show * 4 {
            writeln!(out, "  … {} more", r.drift.len() - show * 4)?;
        }
    }

    if missing > 0 || c.not_targeted > 0 {
        writeln!(out)?;
        writeln!(out, "Not analysed:")?;
        for h in r.hosts.iter().filter(|h| h.rank.is_none()) {
            writeln!(out, "  {}  {}  {}", h.host, h.status, term(h.message.as_deref().unwrap_or(""), SHOWN))?;
        }
        for h in &c.not_targeted_hosts {
            writeln!(out, "  {}  not targeted  {}", h.host, term(&h.reason, SHOWN))?;
        }
    }

    let partial: Vec<_> = r.hosts.iter().filter(|h| h.rank.is_some() && !h.failed_queries.is_empty()).collect();
    if !partial.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Queries without usable rows ({} host{}):",
            partial.len(),
            if partial.len() == 1 { "" } else { "s" }
        )?;
        for h in partial.iter().take(show * 4) {
            let q: Vec<String> = h
                .failed_queries
                .iter()
                .map(|f| format!("{} {} ({})", f.query, f.status, term(&f.message, 80)))
                .collect();
            writeln!(out, "  {}: {}", h.host, q.join("; "))?;
        }
        if partial.len() > show * 4 {
            writeln!(out, "  … {} more hosts", partial.len() - show * 4)?;
        }
    }

    if !r.suppressed.is_empty() {
        writeln!(out)?;
        writeln!(out, "Suppressed (known benign, not scored):")?;
        for s in &r.suppressed {
            writeln!(out, "  {} findings on {} hosts: {} ({})", s.findings, s.hosts, term(&s.reason, SHOWN), s.query)?;
        }
    }

    if !r.warnings.is_empty() {
        writeln!(out)?;
        writeln!(out, "Warnings:")?;
        for w in &r.warnings {
            writeln!(out, "  ! {}", term(w, SHOWN * 2))?;
        }
    }

    writeln!(out)?;
    let rest: Vec<_> = r.hosts.iter().filter(|h| h.rank.is_some() && !h.outlier).collect();
    if let Some(top) = rest.first() {
        writeln!(
            out,
            "Other hosts: {} below the threshold; highest {} with score {}.",
            rest.len(),
            top.host,
            top.score
        )?;
    }
    if let Some(e) = evidence {
        writeln!(out, "Evidence: {e}")?;
    }
    Ok(())
}

/// Renders a finished collection for people.
pub fn run_summary(out: &mut dyn Write, m: &RunManifest, evidence: &str) -> io::Result<()> {
    let c = &m.counts;
    writeln!(
        out,
        "{} run {} of target {}: {} of {} hosts collected, {} failed{}.",
        m.kind,
        m.id,
        m.target,
        c.collected,
        c.targeted,
        c.failed,
        if c.missing > 0 { format!(", {} never reported", c.missing) } else { String::new() }
    )?;
    if m.state == RunState::Interrupted {
        writeln!(out, "The run was interrupted; what arrived is kept.")?;
    }
    if !c.by_status.is_empty() {
        let s: Vec<String> = c.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "Hosts by status: {}.", s.join(", "))?;
    }
    writeln!(out, "Evidence: {evidence}")?;
    Ok(())
}

/// A stored run, as `diffy runs` lists it.
#[derive(Debug, Serialize)]
pub struct RunListing<'a> {
    /// Run id.
    pub id: &'a str,
    /// Target key.
    pub target: &'a str,
    /// Baseline or survey.
    pub kind: diffy_core::RunKind,
    /// Running, complete, interrupted.
    pub state: RunState,
    /// Start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// End.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Incident.
    pub incident_id: Option<&'a str>,
    /// Operator.
    pub operator: Option<&'a str>,
    /// Transport.
    pub transport: &'a str,
    /// Payload name.
    pub payload: &'a str,
    /// Payload hash.
    pub payload_hash: &'a str,
    /// Hosts targeted.
    pub hosts: usize,
    /// Hosts collected.
    pub collected: usize,
    /// Hosts failed.
    pub failed: usize,
    /// Whether it is its target's current baseline.
    pub baseline: bool,
}

/// Renders stored runs.
pub fn runs(out: &mut dyn Write, runs: &[RunListing<'_>]) -> io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "No runs stored yet. Start with `diffy collect KEY` or `diffy baseline KEY`.");
    }
    writeln!(
        out,
        "{:<26} {:<9} {:<20} {:<17} {:<11} {:>9} {:>6}  INCIDENT",
        "RUN", "KIND", "TARGET", "STARTED (UTC)", "STATE", "COLLECTED", "FAILED"
    )?;
    for r in runs {
        let state = match r.state {
            RunState::Running => "unfinished",
            RunState::Complete => "complete",
            RunState::Interrupted => "interrupted",
            _ => "unknown",
        };
        let kind = if r.baseline {
            "baseline*"
        } else if r.kind == diffy_core::RunKind::Baseline {
            "baseline"
        } else {
            "survey"
        };
        writeln!(
            out,
            "{:<26} {:<9} {:<20} {:<17} {:<11} {:>9} {:>6}  {}",
            r.id,
            kind,
            term(r.target, 20),
            r.started_at.format("%Y-%m-%d %H:%M"),
            state,
            format!("{}/{}", r.collected, r.hosts),
            r.failed,
            term(r.incident_id.unwrap_or("-"), 60)
        )?;
    }
    if runs.iter().any(|r| r.baseline) {
        writeln!(out, "* the target's current baseline")?;
    }
    Ok(())
}

/// Renders the plugin table.
pub fn plugins(out: &mut dyn Write, plugins: &[PluginInfo]) -> io::Result<()> {
    let w = plugins.iter().map(|p| p.name.len()).max().unwrap_or(0).max(4);
    writeln!(out, "{:<10} {:<w$} {:<32} ABOUT", "KIND", "NAME", "IN THIS BUILD")?;
    for p in plugins {
        let status = if p.compiled { "yes".to_string() } else { format!("no (feature {})", p.feature) };
        writeln!(out, "{:<10} {:<w$} {:<32} {}", p.kind, p.name, status, p.about)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{term, terminal_safe};

    #[test]
    fn host_text_is_escaped_and_shortened() {
        assert_eq!(term("plain text, ünïcode", 100), "plain text, ünïcode");
        assert_eq!(term("a\u{1b}[31mb\rc\nd\te\u{7f}", 100), "a\\u{1b}[31mb\\rc\\nd\\te\\u{7f}");
        assert_eq!(
            term("\u{202e}gnp.exe\u{2066}\u{200b}\u{feff}\u{85}", 100),
            "\\u{202e}gnp.exe\\u{2066}\\u{200b}\\u{feff}\\u{85}"
        );
        assert_eq!(term("abcdef", 3), "abc…");
        assert_eq!(terminal_safe("line 1\nline \u{1b}2\n"), "line 1\nline \\u{1b}2\n");
    }
}
