//! `diffy-simulate --hosts N [--seed S] [--canary F] [--other-instance-type F]
//! [--baseline] [--labels] [--campaign KIND:SHARE ...] --out DIR`: writes a
//! simulated fleet in the import
//! format (`DIR/hosts/<id>.json`), with its ground truth in `DIR/truth.json`.
//! A campaign plants one compromise (`root_key`, `modified_binary`, ...) with
//! the same artifact on SHARE (0 to 1) of the hosts.
//! Analyse it with `diffy analyze --import DIR`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use diffy_testkit::fleet::{Compromise, FleetSpec, write_fleet};

fn usage() -> ExitCode {
    eprintln!(
        "usage: diffy-simulate --hosts N [--seed S] [--canary F] [--other-instance-type F] [--baseline] [--labels] [--campaign KIND:SHARE ...] --out DIR"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut hosts, mut seed, mut canary, mut other, mut baseline, mut labels, mut out) =
        (None, 1, 0.10, 0.0, false, false, None);
    let mut campaigns = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next();
        let ok = match a.as_str() {
            "--hosts" => value().and_then(|v| v.parse().ok()).map(|v| hosts = Some(v)).is_some(),
            "--seed" => value().and_then(|v| v.parse().ok()).map(|v| seed = v).is_some(),
            "--canary" => value().and_then(|v| v.parse().ok()).map(|v| canary = v).is_some(),
            "--other-instance-type" => value().and_then(|v| v.parse().ok()).map(|v| other = v).is_some(),
            "--out" => value().map(|v| out = Some(PathBuf::from(v))).is_some(),
            "--campaign" => value()
                .and_then(|v| {
                    let (kind, share) = v.split_once(':')?;
                    let kind = Compromise::ALL.into_iter().find(|k| k.to_string() == kind)?;
                    Some((kind, share.parse::<f64>().ok().filter(|s| (0.0..=1.0).contains(s))?))
                })
                .map(|c| campaigns.push(c))
                .is_some(),
            "--baseline" => {
                baseline = true;
                true
            }
            "--labels" => {
                labels = true;
                true
            }
            _ => false,
        };
        if !ok {
            return usage();
        }
    }
    let (Some(hosts), Some(out)) = (hosts, out) else { return usage() };
    if out.join("hosts").exists() {
        eprintln!("error: {} already has a hosts/ folder; choose a new --out", out.display());
        return ExitCode::from(2);
    }
    let mut spec = FleetSpec::new(hosts, seed).canary(canary).other_instance_type(other).labels(labels);
    for (kind, share) in campaigns {
        spec = spec.campaign(kind, share);
    }
    match write_fleet(&spec, &out, baseline) {
        Ok(truth) => {
            println!(
                "{} hosts in {}: {} compromised ({}), {} canary, {} of another instance type; ground truth in truth.json",
                truth.hosts.len(),
                out.display(),
                truth.compromised.len(),
                {
                    let mut kinds = std::collections::BTreeMap::new();
                    for k in truth.compromised.values() {
                        *kinds.entry(k.to_string()).or_insert(0) += 1;
                    }
                    kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
                },
                truth.canary.len(),
                truth.other_instance_type.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write the fleet: {e}");
            ExitCode::from(2)
        }
    }
}
