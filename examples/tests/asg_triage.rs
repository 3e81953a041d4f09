//! The AWS example binary end to end: an Auto Scaling group in moto, the
//! commands through the scriptable SSM endpoint (run on this machine), the
//! evidence in moto's S3, and the planted listener found.

use std::time::Duration;

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use diffy_testkit::moto::Moto;
use diffy_testkit::ssm_endpoint::{EndpointOptions, SsmEndpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asg_triage_finds_the_planted_listener() {
    let Some(moto) = Moto::start_or_skip("asg-triage example") else { return };
    let conf = moto.sdk_config();
    let lt = aws_sdk_ec2::Client::new(&conf)
        .create_launch_template()
        .launch_template_name("web")
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id("ami-12c6146b").instance_type(InstanceType::T3Micro).build(),
        )
        .send()
        .await
        .unwrap();
    let asg = aws_sdk_autoscaling::Client::new(&conf);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("web-blue")
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(lt.launch_template().unwrap().launch_template_id().unwrap())
                .version("1")
                .build(),
        )
        .min_size(0)
        .max_size(6)
        .desired_capacity(6)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    let out = asg.describe_auto_scaling_groups().auto_scaling_group_names("web-blue").send().await.unwrap();
    let mut ids: Vec<String> =
        out.auto_scaling_groups()[0].instances().iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    ids.sort();
    moto.create_bucket("evidence").unwrap();
    let endpoint =
        SsmEndpoint::start(EndpointOptions { visible_after: Duration::from_millis(300), ..EndpointOptions::default() })
            .await
            .unwrap();

    let plant = format!(r#"[ "$DIFFY_INSTANCE_ID" = {} ] && printf '31337\t/dev/shm/.x/backdoor\n'; true"#, ids[2]);
    let (moto_url, ssm_url) = (moto.url(), endpoint.url());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_asg-triage"))
            .args(["web-blue", "s3://evidence/IR-77", "IR-77"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("AWS_ENDPOINT_URL", moto_url)
            .env("AWS_ENDPOINT_URL_SSM", ssm_url)
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ASG_TRIAGE_EXTRA", plant)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with(&format!("{} score ", ids[2])), "{stdout}");
    assert!(stdout.contains("6 hosts"), "{stdout}");
    assert!(endpoint.calls().comments.iter().all(|c| c == "diffy IR-77"), "{:?}", endpoint.calls());
}
