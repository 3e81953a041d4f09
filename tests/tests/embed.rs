//! Embedding `diffy-cli`'s registry: its plugins build on whatever runtime
//! the embedder chose, a current-thread one included (building them used to
//! call `block_in_place`, which panics there). Against moto for S3, Auto
//! Scaling and EC2; skips without moto, except under CI.

use diffy_cli::registry::{self, AwsCell, AwsSettings, StoreUse, TransportSettings};
use diffy_core::TargetKey;
use diffy_testkit::moto::Moto;

/// Runs the check in a child of this test binary with the environment that
/// points the AWS SDK at moto (the environment is the SDK's configuration,
/// and a test may not change its own).
#[test]
fn plugins_build_on_a_current_thread_runtime() {
    let Some(moto) = Moto::start_or_skip("registry on a current-thread runtime") else { return };
    moto.create_bucket("diffy-embed").unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "current_thread_child", "--ignored", "--nocapture"])
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDMOTOTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DIFFY_EMBED_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("test current_thread_child ... ok"), "the child ran the check: {text}");
}

#[test]
#[ignore = "run by plugins_build_on_a_current_thread_runtime, with moto's environment"]
fn current_thread_child() {
    assert_eq!(std::env::var("DIFFY_EMBED_CHILD").as_deref(), Ok("1"), "run through its parent test");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let options = diffy_aws::AwsOptions::default().regions(["us-east-1"]);
        let aws = AwsCell::new(AwsSettings { options, ..AwsSettings::default() });
        let settings = TransportSettings::default();
        let store = registry::store("s3://diffy-embed/runs", &aws, StoreUse::Write).await.expect("the S3 store opens");
        let key = TargetKey::new("web").unwrap();
        assert!(store.list_runs(Some(&key)).await.expect("it lists").is_empty(), "a new store has no runs");
        registry::transport("ssm", &settings, &aws).await.expect("the SSM transport builds");
        let target =
            registry::target("asg", vec![], None, "ssm", &settings, &aws).await.expect("the asg target builds");
        // moto has no Auto Scaling group: resolving says so, as data or an error, without panicking.
        let resolved = target.resolve(&key).await;
        assert!(resolved.map(|r| r.hosts.is_empty()).unwrap_or(true), "no group, no host");
        // A store that must exist, and does not, is an error, not a panic.
        let missing = registry::store("s3://no-such-bucket/x", &aws, StoreUse::Read).await;
        assert!(missing.is_err(), "a store that does not exist is refused");
    });
}
