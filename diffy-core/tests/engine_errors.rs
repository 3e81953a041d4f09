//! States of a run that stop an operation are error categories a caller can
//! match, not strings: a target that resolved to no host, a baseline refused.

use async_trait::async_trait;
use diffy_core::run::NotTargeted;
use diffy_core::{
    BaselineOptions, BaselineRefusal, CancellationToken, Engine, Error, FsStore, Host, LocalTransport, NullSink,
    PerHost, Resolution, RunOptions, ShellPayload, StaticTarget, Target, TargetKey,
};

/// A target whose only instance is still starting.
#[derive(Debug)]
struct Pending;

#[async_trait]
impl Target for Pending {
    fn name(&self) -> &str {
        "pending"
    }

    async fn resolve(&self, _: &TargetKey) -> diffy_core::Result<Resolution> {
        let host = Host::named("i-0123")?;
        Ok(Resolution {
            hosts: Vec::new(),
            not_targeted: vec![NotTargeted { host, reason: "lifecycle state Pending".into() }],
        })
    }
}

fn engine(target: impl Target + 'static, store: &std::path::Path) -> Engine {
    Engine::builder()
        .target(target)
        .collection(PerHost::new(LocalTransport::new()))
        .payload(ShellPayload)
        .store(FsStore::open(store).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_target_with_no_host_is_no_hosts_naming_who_was_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(Pending, dir.path());
    let key = TargetKey::new("web").unwrap();
    let err = e.collect(&key, &RunOptions::default(), &NullSink, CancellationToken::new()).await.unwrap_err();
    let Error::NoHosts { target, left_out, message } = &err else { panic!("{err:?}") };
    assert_eq!((target.as_str(), *left_out), ("web", 1));
    assert!(message.contains("i-0123: lifecycle state Pending"), "{message}");
    assert!(err.help().is_some_and(|h| h.contains("--host")));
}

#[tokio::test]
async fn a_baseline_that_collected_nothing_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(StaticTarget::new(vec![Host::named("a").unwrap()]).unwrap(), dir.path());
    let key = TargetKey::new("web").unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err =
        e.baseline(&key, &RunOptions::default(), &BaselineOptions::default(), &NullSink, cancel).await.unwrap_err();
    let Error::BaselineRefused { run, reason, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*reason, BaselineRefusal::NothingCollected, "{message}");
    assert!(message.contains(run.as_str()) && message.contains("not made the baseline"), "{message}");
}
