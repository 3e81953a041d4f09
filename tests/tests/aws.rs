//! Contract tests against moto server (a local AWS endpoint, PyPI
//! `moto[server]`): the `asg` target (Auto Scaling lifecycle states, tag
//! filters, instance ids, assume-role into another account), `SendCommand`
//! chunking and `GetCommandInvocation`, and the S3 store's conformance.
//! Then the whole CLI over AWS: targets from moto, commands through the
//! scriptable SSM endpoint, evidence into moto's S3.
//!
//! Each test starts its own moto server on a free loopback port. Without
//! moto installed the tests say so and skip, except under CI, where they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use common::Diffy;
use diffy_aws::{Account, AwsContext, AwsOptions};
use diffy_core::plugin::Script;
use diffy_core::{CollectEvent, CollectOptions, CollectRequest, Collection, Host, HostStatus, PayloadSpec, Target};
use diffy_target_asg::{AsgTarget, Selector};
use diffy_testkit::moto::Moto;
use diffy_testkit::ssm_endpoint::{EndpointOptions, Fault, SsmEndpoint};
use diffy_transport_ssm::{SsmOptions, SsmTransport};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const AMI: &str = "ami-12c6146b";

async fn launch_template(conf: &aws_config::SdkConfig, name: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let lt = ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id(AMI).instance_type(InstanceType::T3Micro).build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    lt.launch_template().and_then(|t| t.launch_template_id()).unwrap().to_string()
}

/// Creates a group of `n` instances and returns their ids, sorted.
async fn group(conf: &aws_config::SdkConfig, name: &str, n: i32) -> Vec<String> {
    let lt = launch_template(conf, &format!("{name}-lt")).await;
    let asg = aws_sdk_autoscaling::Client::new(conf);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(LaunchTemplateSpecification::builder().launch_template_id(lt).version("1").build())
        .min_size(0)
        .max_size(n)
        .desired_capacity(n)
        .availability_zones("us-east-1a")
        .availability_zones("us-east-1b")
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    let out = asg.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
    let mut ids: Vec<String> =
        out.auto_scaling_groups()[0].instances().iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    ids.sort();
    ids
}

async fn run_tagged(conf: &aws_config::SdkConfig, n: i32, key: &str, value: &str) -> Vec<String> {
    run_with_tags(conf, n, &[(key, value), ("Name", &format!("{value}-node"))]).await
}

/// Launches `n` instances with these tags; returns their ids.
async fn run_with_tags(conf: &aws_config::SdkConfig, n: i32, tags: &[(&str, &str)]) -> Vec<String> {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    let out = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::T3Micro)
        .min_count(n)
        .max_count(n)
        .tag_specifications(spec.build())
        .send()
        .await
        .expect("RunInstances");
    out.instances().iter().map(|i| i.instance_id().unwrap().to_string()).collect()
}

/// A scratch diffy that reaches moto for AWS and `ssm` for SSM.
fn diffy_on(moto: &Moto, ssm: &SsmEndpoint) -> Diffy {
    Diffy::new()
        .env("AWS_ENDPOINT_URL", &moto.url())
        .env("AWS_ENDPOINT_URL_SSM", &ssm.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDMOTOTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn ctx(moto: &Moto, options: AwsOptions) -> AwsContext {
    AwsContext::new(moto.sdk_config(), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asg_targets_in_service_instances_and_lists_the_others_with_their_state() {
    let Some(moto) = Moto::start_or_skip("asg target") else { return };
    let conf = moto.sdk_config();
    let a = group(&conf, "api-v001", 4).await;
    let b = group(&conf, "api-v002", 2).await;
    let asg = aws_sdk_autoscaling::Client::new(&conf);
    asg.enter_standby()
        .auto_scaling_group_name("api-v001")
        .instance_ids(&a[0])
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("EnterStandby");

    // The key alone names the group.
    let t = AsgTarget::new(ctx(&moto, AwsOptions::default()), vec![]);
    let r = t.resolve(&"api-v001".parse().unwrap()).await.unwrap();
    let ids: Vec<String> = r.hosts.iter().map(|h| h.id.to_string()).collect();
    assert_eq!(ids, a[1..].to_vec(), "the InService members");
    assert_eq!(r.not_targeted.len(), 1, "{:?}", r.not_targeted);
    assert_eq!(r.not_targeted[0].host.id.as_str(), a[0]);
    assert!(r.not_targeted[0].reason.contains("Standby"), "{}", r.not_targeted[0].reason);
    let l = &r.hosts[0].labels;
    for k in ["account", "region", "az", "instance_type", "image_id", "launch_template", "launch_time", "asg"] {
        assert!(l.contains_key(k), "label {k} in {l:?}");
    }
    assert_eq!(l["account"], "123456789012");
    assert_eq!(l["region"], "us-east-1");
    assert_eq!(l["asg"], "api-v001");
    assert!(l["az"].starts_with("us-east-1"), "{l:?}");
    assert_eq!(l["instance_type"], "t3.micro");
    assert!(l["launch_template"].starts_with("lt-") && l["launch_template"].ends_with(" v1"), "{l:?}");

    // Several groups at once.
    let t = AsgTarget::new(
        ctx(&moto, AwsOptions::default()),
        vec![Selector::Group("api-v001".into()), Selector::Group("api-v002".into())],
    );
    let r = t.resolve(&"api".parse().unwrap()).await.unwrap();
    assert_eq!(r.hosts.len(), 5);
    assert!(b.iter().all(|id| r.hosts.iter().any(|h| h.id.as_str() == id)));

    // --host chooses among the group's instances, never adds to them: one of
    // another group, or none at all, is an error naming it.
    let t = AsgTarget::new(ctx(&moto, AwsOptions::default()), vec![]).select([a[2].clone()]);
    let r = t.resolve(&"api-v001".parse().unwrap()).await.unwrap();
    let ids: Vec<&str> = r.hosts.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, [a[2].as_str()]);
    assert!(r.not_targeted.is_empty(), "the Standby instance was not chosen: {:?}", r.not_targeted);
    let t = AsgTarget::new(ctx(&moto, AwsOptions::default()), vec![]).select([a[1].clone(), b[0].clone()]);
    let e = t.resolve(&"api-v001".parse().unwrap()).await.unwrap_err().to_string();
    assert!(e.contains(&format!("{} is not among the running instances of Auto Scaling group api-v001", b[0])), "{e}");
    assert!(!e.contains(&a[1]), "only the unknown one is named: {e}");

    // A group that does not exist is an error that names it, not an empty fleet.
    let t = AsgTarget::new(ctx(&moto, AwsOptions::default()), vec![]);
    let e = t.resolve(&"api-v003".parse().unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("no Auto Scaling group named \"api-v003\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_and_instance_ids_select_running_instances() {
    let Some(moto) = Moto::start_or_skip("tag target") else { return };
    let conf = moto.sdk_config();
    let api = run_tagged(&conf, 3, "Service", "api").await;
    let web = run_tagged(&conf, 2, "Service", "web").await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    ec2.stop_instances().instance_ids(&api[2]).send().await.expect("StopInstances");

    let t = AsgTarget::new(ctx(&moto, AwsOptions::default()), vec![Selector::tag("Service=api").unwrap()]);
    let r = t.resolve(&"api".parse().unwrap()).await.unwrap();
    let ids: BTreeSet<String> = r.hosts.iter().map(|h| h.id.to_string()).collect();
    assert_eq!(ids, api[..2].iter().cloned().collect(), "running api instances");
    assert_eq!(r.not_targeted.len(), 1);
    assert_eq!(r.not_targeted[0].host.id.as_str(), api[2]);
    assert!(r.not_targeted[0].reason.contains("stopp"), "{}", r.not_targeted[0].reason);
    assert_eq!(r.hosts[0].labels["name"], "api-node");

    // Any of several values; tag filters and ids add up; an unknown id is listed.
    let ghost = "i-0123456789abcdef0".to_string();
    let t = AsgTarget::new(
        ctx(&moto, AwsOptions::default()),
        vec![Selector::tag("Service=api,nope").unwrap(), Selector::instances([web[0].clone(), ghost.clone()]).unwrap()],
    );
    let r = t.resolve(&"mixed".parse().unwrap()).await.unwrap();
    let ids: BTreeSet<String> = r.hosts.iter().map(|h| h.id.to_string()).collect();
    let want: BTreeSet<String> = [api[0].clone(), api[1].clone(), web[0].clone()].into();
    assert_eq!(ids, want);
    let nt: BTreeMap<String, String> =
        r.not_targeted.iter().map(|n| (n.host.id.to_string(), n.reason.clone())).collect();
    assert!(nt[&ghost].contains("no such instance"), "{nt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_reaches_the_groups_of_another_account() {
    let Some(moto) = Moto::start_or_skip("assume-role") else { return };
    let other = "111111111111";
    // Set up the other account as its own role would see it.
    let sts = aws_sdk_sts::Client::new(&moto.sdk_config());
    let creds = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{other}:role/DiffyTriage"))
        .role_session_name("setup")
        .send()
        .await
        .expect("AssumeRole")
        .credentials
        .unwrap();
    let there = moto.sdk_config_with(creds.access_key_id(), creds.secret_access_key());
    let ids = group(&there, "payments", 2).await;

    // Not in the caller's own account...
    let own = AsgTarget::new(ctx(&moto, AwsOptions::default()), vec![]);
    let e = own.resolve(&"payments".parse().unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("no Auto Scaling group"), "{e}");
    // ...but found by assuming the role there, from an inventory.
    let inventory = diffy_aws::parse_inventory(&format!("{other} name=payments regions=us-east-1\n"), "inv").unwrap();
    let c = ctx(&moto, AwsOptions::default().accounts(inventory).session_name("diffy-IR-1234"));
    assert_eq!(c.role_arn(other), format!("arn:aws:iam::{other}:role/DiffyTriage"));
    let r = AsgTarget::new(c.clone(), vec![]).resolve(&"payments".parse().unwrap()).await.unwrap();
    let got: Vec<String> = r.hosts.iter().map(|h| h.id.to_string()).collect();
    assert_eq!(got, ids);
    assert!(r.hosts.iter().all(|h| h.labels["account"] == other), "{:?}", r.hosts);
    // The transport picks the same account for these hosts.
    assert_eq!(c.scope_of(&r.hosts[0].labels).account.as_deref(), Some(other));
    let _ = Account::new(other).unwrap();
}

/// `SendCommand` as moto records it: 120 instances in 3 calls of at most 50,
/// the incident in the comment, the timeout from the deadline, no credential
/// in the commands; `GetCommandInvocation`'s answer for one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_chunks_120_instances_into_three_calls() {
    let Some(moto) = Moto::start_or_skip("SendCommand chunking") else { return };
    let conf = moto.sdk_config();
    // Ids of no EC2 instance: moto adds every EC2 instance of the account to
    // a command sent without Targets, which would hide what was really sent.
    let ids: Vec<String> = (1..=120).map(|i| format!("i-{i:017x}")).collect();
    let ssm = aws_sdk_ssm::Client::new(&conf);
    let t = SsmTransport::new(
        ssm.clone(),
        SsmOptions::default().comment("diffy IR-1234").poll_interval(Duration::from_millis(200)),
    );
    let spec = Arc::new(PayloadSpec::from_toml("[[query]]\nname = \"id\"\nshell = \"id\"\n", "p").unwrap());
    let script = Arc::new(Script::render(&spec, Duration::from_secs(60)).unwrap());
    let hosts: Vec<Host> = ids.iter().map(|i| Host::named(i).unwrap()).collect();
    let cancel = CancellationToken::new();
    let options = CollectOptions::default().concurrency(t.default_concurrency()).host_deadline(Duration::from_secs(60));
    let mut events = t.collect(CollectRequest::new(hosts, spec, script, options, cancel.clone()));
    // moto has no ListCommandInvocations: once the three sends are in, stop.
    let stopper = {
        let ssm = ssm.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let n = ssm.list_commands().send().await.map(|o| o.commands().len()).unwrap_or(0);
                if n >= 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        })
    };
    let mut statuses = BTreeMap::new();
    while let Some(e) = events.next().await {
        if let CollectEvent::Finished(r) = e {
            statuses.insert(r.host.id.to_string(), r.status);
        }
    }
    stopper.await.unwrap();
    assert_eq!(statuses.len(), 120, "every host ends");
    assert!(statuses.values().all(|s| *s == HostStatus::Cancelled), "{statuses:?}");

    let listed = ssm.list_commands().send().await.unwrap();
    let cmds = listed.commands();
    assert_eq!(cmds.len(), 3, "120 instances in 3 calls");
    let mut sizes: Vec<usize> = cmds.iter().map(|c| c.instance_ids().len()).collect();
    sizes.sort();
    assert_eq!(sizes, [20, 50, 50]);
    let all: BTreeSet<&str> = cmds.iter().flat_map(|c| c.instance_ids().iter().map(String::as_str)).collect();
    assert_eq!(all.len(), 120, "each instance once");
    for c in cmds {
        assert_eq!(c.document_name(), Some("AWS-RunShellScript"));
        assert_eq!(c.comment(), Some("diffy IR-1234"));
        let p = c.parameters().unwrap();
        assert!(p["executionTimeout"][0].parse::<u64>().unwrap() >= 60, "{p:?}");
        let text = p["commands"].join("\n");
        for secret in ["AKIDMOTOTEST", "secret", "AWS_SECRET", "AWS_SESSION_TOKEN"] {
            assert!(!text.contains(secret), "no credential in the command: {secret}");
        }
    }
    // GetCommandInvocation: moto answers with an empty output, which must be
    // reported as damaged, never parsed as a whole (empty) result.
    let inv = ssm
        .get_command_invocation()
        .command_id(cmds[0].command_id().unwrap())
        .instance_id(&cmds[0].instance_ids()[0])
        .send()
        .await
        .expect("GetCommandInvocation");
    assert!(inv.status().is_some() && inv.document_name() == Some("AWS-RunShellScript"), "{inv:?}");
    let decoded = diffy_transport_ssm::envelope::decode(inv.standard_output_content().unwrap_or(""), "n", 1 << 20);
    assert!(matches!(decoded, diffy_transport_ssm::envelope::Decoded::Damaged(_)), "{decoded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conformance() {
    let Some(moto) = Moto::start_or_skip("S3 store conformance") else { return };
    moto.create_bucket("diffy-evidence").unwrap();
    let c = ctx(&moto, AwsOptions::default());
    let s = diffy_store_object::BlobStore::s3("s3://diffy-evidence/IR-1234/", &c).await.unwrap();
    assert_eq!(diffy_core::Persistence::location(&s), "s3://diffy-evidence/IR-1234");
    diffy_testkit::conformance::persistence(&s).await;
    // A missing bucket is a clear error.
    let e = diffy_store_object::BlobStore::s3("s3://no-such-bucket/x", &c).await.unwrap_err();
    assert!(e.to_string().contains("no-such-bucket"), "{e}");
}

/// The issue's command over AWS: `diffy collect KEY --target asg --transport
/// ssm --store s3://... --incident-id ...`, then a cluster analysis of that run.
/// moto holds the group and the bucket; the scriptable SSM endpoint runs the
/// commands, one of the instances with a planted listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collect_and_analyze_an_auto_scaling_group_over_ssm_into_s3() {
    let Some(moto) = Moto::start_or_skip("AWS end to end") else { return };
    let conf = moto.sdk_config();
    let ids = group(&conf, "api-v001", 8).await;
    aws_sdk_autoscaling::Client::new(&conf)
        .enter_standby()
        .auto_scaling_group_name("api-v001")
        .instance_ids(&ids[0])
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    moto.create_bucket("diffy-evidence").unwrap();
    moto.create_bucket("ssm-output").unwrap();
    let planted = ids[5].clone();
    // The "agents" write whole outputs to the output bucket, in moto.
    let writer = diffy_aws::s3::store("ssm-output", &ctx(&moto, AwsOptions::default())).unwrap();
    let endpoint = SsmEndpoint::start(EndpointOptions {
        visible_after: Duration::from_millis(500),
        throttle_rps: Some(20.0),
        output_writer: Some(("ssm-output".into(), Arc::new(writer))),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();

    let d = diffy_on(&moto, &endpoint);
    d.write(
        "payload.toml",
        &format!(
            "name = \"ports\"\n[[query]]\nname = \"listening\"\nformat = \"lines\"\nweight = 8.0\nshell = '''\necho \
             'tcp 0.0.0.0:22 sshd'\necho 'tcp 0.0.0.0:443 nginx'\nif [ \"$DIFFY_INSTANCE_ID\" = {planted} ]; then echo \
             'tcp 0.0.0.0:4444 nc'; head -c 30000 /dev/urandom | od -An -tx1 -v; fi\n'''\n"
        ),
    );
    let store = "s3://diffy-evidence/IR-1234";
    let args: Vec<String> = [
        "collect",
        "api-v001",
        "--target",
        "asg",
        "--transport",
        "ssm",
        "--store",
        store,
        "--incident-id",
        "IR-1234",
        "--payload",
        "payload.toml",
        "--ssm-output",
        "s3://ssm-output/IR-1234",
        "--format",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let (d, r) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = d.run(&args);
        (d, r)
    })
    .await
    .unwrap();
    assert_eq!(r.code, 0, "collect: {}\n{}", r.stdout, r.stderr);
    let j = r.json();
    let run = j["id"].as_str().unwrap_or_else(|| panic!("run id in {j}")).to_string();
    // The planted host's output (random bytes too) is past SSM's inline
    // limit: whole only because it was read from the output bucket.
    assert_eq!(j["counts"]["by_status"]["ok"], 7, "{j}");
    let nt = j["not_targeted"].as_array().unwrap();
    assert_eq!(nt.len(), 1, "{j}");
    assert_eq!(nt[0]["host"]["id"], ids[0].as_str());
    assert!(nt[0]["reason"].as_str().unwrap().contains("Standby"));
    assert!(endpoint.calls().comments.iter().all(|c| c == "diffy IR-1234"), "{:?}", endpoint.calls());

    let (d, r) = tokio::task::spawn_blocking(move || {
        let r = d.run(&["analyze", "--from", &run, "--store", store, "--method", "cluster", "--format", "json"]);
        (d, r)
    })
    .await
    .unwrap();
    assert_eq!(r.code, 1, "outliers found: {}\n{}", r.stdout, r.stderr);
    let report = r.report();
    let outliers: BTreeSet<String> = report.outliers().map(|h| h.host.clone()).collect();
    assert_eq!(outliers, BTreeSet::from([planted.clone()]));
    let f = &report.hosts.iter().find(|h| h.host == planted).unwrap().findings;
    assert!(f.iter().any(|f| f.row.values().any(|v| v.contains("4444"))), "{f:?}");
    let r = d.run(&["runs", "--store", store, "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("api-v001"), "{}", r.stdout);
}

/// Output past SSM's inline limit (24,000 characters) is read whole from the
/// command's output bucket (moto's S3, written by the endpoint as the agent
/// would); when the bucket holds nothing, the host is `truncated` and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_past_the_inline_limit_is_read_whole_from_the_output_bucket() {
    let Some(moto) = Moto::start_or_skip("SSM output bucket") else { return };
    moto.create_bucket("ssm-output").unwrap();
    moto.create_bucket("elsewhere").unwrap();
    let c = ctx(&moto, AwsOptions::default());
    let writer = diffy_aws::s3::store("ssm-output", &c).unwrap();
    let endpoint = SsmEndpoint::start(EndpointOptions {
        output_writer: Some(("ssm-output".into(), Arc::new(writer))),
        // Another instance forges this one's output object (the run's marker is no secret).
        faults: [("i-00000000000000003".to_string(), Fault::ForgedOutput)].into(),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&moto.sdk_config()).endpoint_url(endpoint.url()).build(),
    );
    let spec = PayloadSpec::from_toml(
        r#"
name = "big"
[[query]]
name = "dump"
shell = 'if [ "$DIFFY_INSTANCE_ID" = "i-00000000000000002" ]; then echo small; else head -c 60000 /dev/urandom | od -An -tx1 -v; fi'
format = "lines"
"#,
        "big",
    )
    .unwrap();
    let hosts: Vec<Host> =
        ["i-00000000000000001", "i-00000000000000002", "i-00000000000000003"].map(|i| Host::named(i).unwrap()).to_vec();
    let transport = |bucket: &str| {
        let reader = diffy_aws::s3::store(bucket, &c).unwrap();
        let o = SsmOptions::default()
            .poll_interval(Duration::from_millis(300))
            .visibility_grace(Duration::from_secs(2))
            .output_bucket(diffy_transport_ssm::OutputBucket::new(bucket, "/diffy/IR-7/", Arc::new(reader)));
        SsmTransport::new(ssm.clone(), o)
    };

    let results =
        common::collect_results(&transport("ssm-output"), hosts.clone(), spec.clone(), Duration::from_secs(30)).await;
    let big = results.iter().find(|r| r.host.id.as_str() == "i-00000000000000001").unwrap();
    assert_eq!(big.status, HostStatus::Ok, "{:?} {:?}", big.message, big.transport);
    let lines = String::from_utf8_lossy(&big.queries[0].stdout).lines().count();
    assert_eq!(lines, 60000 / 16, "every line of od's output arrived");
    assert!(big.transport["ssm.output_chars"].parse::<usize>().unwrap() >= 24_000, "{:?}", big.transport);
    let source = &big.transport["ssm.output_source"];
    assert!(source.starts_with("s3://ssm-output/diffy/IR-7/"), "{source}");
    assert!(source.ends_with("/i-00000000000000001/awsrunShellScript/0.awsrunShellScript/stdout"), "{source}");
    let small = results.iter().find(|r| r.host.id.as_str() == "i-00000000000000002").unwrap();
    assert_eq!(small.status, HostStatus::Ok);
    assert!(!small.transport.contains_key("ssm.output_source"), "inline output is used when whole");
    // The forged object is refused: it does not begin with what SSM returned inline.
    let forged = results.iter().find(|r| r.host.id.as_str() == "i-00000000000000003").unwrap();
    assert_eq!(forged.status, HostStatus::Truncated, "{:?} {:?}", forged.message, forged.transport);
    let m = forged.message.as_deref().unwrap();
    assert!(m.contains("is not this instance's output"), "{m}");
    assert!(!forged.transport.contains_key("ssm.output_source"), "{:?}", forged.transport);
    assert_eq!(forged.unframed_stdout.len(), 24_000, "the genuine inline output is kept as evidence");
    assert_eq!(endpoint.output_errors(), Vec::<String>::new());

    // The agents may not write to this bucket: nothing there.
    let results = common::collect_results(&transport("elsewhere"), hosts, spec, Duration::from_secs(30)).await;
    let big = results.iter().find(|r| r.host.id.as_str() == "i-00000000000000001").unwrap();
    assert_eq!(big.status, HostStatus::Truncated, "{:?}", big.message);
    let m = big.message.as_deref().unwrap();
    assert!(m.contains("24000") && m.contains("no stdout object at s3://elsewhere/diffy/IR-7/"), "{m}");
    assert_eq!(big.unframed_stdout.len(), 24_000, "the cut output is kept as evidence");
}

/// The README's AWS lines, run verbatim against moto (EC2, Auto Scaling, S3,
/// STS) and the scriptable SSM endpoint. The endpoint runs the commands on
/// this machine, so a small payload comes from `DIFFY_PAYLOAD` (the standard
/// pack's output would pass SSM's inline limit on every "instance").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_against_moto() {
    use common::readme::Readme;
    const T: &str = "aws::readme_commands_against_moto";
    let Some(moto) = Moto::start_or_skip("README commands") else { return };
    let conf = moto.sdk_config();
    let v1 = group(&conf, "api-v001", 3).await;
    let v2 = group(&conf, "api-v002", 2).await;
    let tagged = run_with_tags(&conf, 2, &[("Service", "api"), ("Env", "prod")]).await;
    assert_eq!(tagged.len(), 2);
    moto.create_bucket("bucket").unwrap();
    let endpoint = SsmEndpoint::start(EndpointOptions::default()).await.unwrap();
    let d = diffy_on(&moto, &endpoint).env("DIFFY_PAYLOAD", "small.toml");
    d.write(
        "small.toml",
        "[[query]]\nname = \"id\"\nshell = 'echo \"$DIFFY_INSTANCE_ID\"; uname -s'\nformat = \"lines\"\n",
    );
    d.write("accounts.txt", "123456789012 name=prod\n");
    d.write("instances.txt", &(v2.join("\n") + "\n"));
    let readme = Readme::load();
    let d = Arc::new(d);
    let sh = |line: String| {
        let d = d.clone();
        tokio::task::spawn_blocking(move || d.sh(&line))
    };
    let collected = |r: &common::Run, n: usize| {
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(&format!(": {n} of {n} hosts collected, 0 failed.")), "{}\n{}", r.stdout, r.stderr);
    };

    let r = sh(readme.line(
        "./target/release/diffy collect api-v001 --target asg --transport ssm --store s3://bucket/prefix --incident-id IR-1234",
        T,
        &[],
    ))
    .await
    .unwrap();
    collected(&r, 3);
    let run = run_id_in(&r.stdout);
    let r = sh(readme.line(
        "./target/release/diffy analyze --from RUN --store s3://bucket/prefix --method cluster",
        T,
        &[("RUN", &run)],
    ))
    .await
    .unwrap();
    assert_eq!(r.code, 0, "identical hosts: {}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Coverage: 3 of 3 targeted hosts analysed."), "{}", r.stdout);
    for (line, n) in [
        ("diffy collect api-v001 --target asg --transport ssm --incident-id IR-1234", 3),
        ("diffy collect api --target asg --asg api-v001 --asg api-v002 --transport ssm", 5),
        ("diffy collect api --target asg --tag Service=api --tag Env=prod --transport ssm", 2),
        (
            "diffy collect api-v001 --target asg --accounts accounts.txt --region us-east-1 --region eu-west-1 --transport ssm",
            3,
        ),
        ("diffy collect api-v001 --transport ssm --hosts instances.txt --incident-id IR-1234", 2),
    ] {
        let r = sh(readme.line(line, T, &[])).await.unwrap();
        collected(&r, n);
    }
    // The README's example id is no instance of this account: said so, exit 2.
    let r = sh(readme.line("diffy collect ir --target asg --instance-id i-0123456789abcdef0 --transport ssm", T, &[]))
        .await
        .unwrap();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("no such instance"), "{}\n{}", r.stdout, r.stderr);
    assert!(v1.iter().chain(&v2).all(|id| !r.stdout.contains(id.as_str())), "only the named instance");
}

fn run_id_in(text: &str) -> String {
    text.split(|c: char| c.is_whitespace())
        .find(|w| w.len() == 23 && w.as_bytes()[8] == b'T' && w.as_bytes()[15] == b'Z')
        .unwrap_or_else(|| panic!("a run id in {text}"))
        .to_string()
}
