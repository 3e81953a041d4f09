//! Benchmark: `analyze --from` over an S3 store, against moto. Stores N hosts
//! (the shell pack's real result on this machine, with the queries that differ
//! between real hosts, processes, listeners, loaded code and temporary files,
//! made unique per host), then reads the run back the way analysis does
//! (`stored_observations`: records and blocks, parsed) and prints the
//! requests per host and the wall time.
//!
//! `DIFFY_MOTO_SERVER=.../moto_server cargo bench -p diffy-tests --bench s3`.
//! Sizes: DIFFY_BENCH_SIZES=200,2000; runs per size: DIFFY_BENCH_RUNS=3.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use diffy_core::plugin::stored_observations;
use diffy_core::result::sha256_hex;
use diffy_core::{Host, HostId, HostResult, Persistence, RunId};
use diffy_store_object::BlobStore;
use diffy_testkit::moto::Moto;
use futures::StreamExt;

mod shared;

/// Queries whose output differs from host to host in a real fleet.
const PER_HOST: &[&str] = &["processes", "listening_ports", "loaded_code", "temp_files", "_context"];

fn host(one: &HostResult, i: usize) -> HostResult {
    let mut r = one.clone();
    r.host = Host::new(HostId::new(format!("bench-{i}")).unwrap());
    for q in r.queries.iter_mut().filter(|q| PER_HOST.contains(&q.name.as_str())) {
        let mut b = q.stdout.to_vec();
        b.extend_from_slice(format!("\n{i}\n").as_bytes());
        q.stdout = Bytes::from(b);
        q.stdout_sha256 = sha256_hex(&q.stdout);
    }
    r
}

fn main() {
    let Some(moto) = Moto::start_or_skip("s3 bench") else { return };
    let sizes = shared::sizes("DIFFY_BENCH_SIZES", "200,2000");
    let runs = std::env::var("DIFFY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let one = shared::real_result();
    let blocks = one
        .queries
        .iter()
        .map(|q| usize::from(!q.stdout.is_empty()) + usize::from(!q.stderr.is_empty()))
        .sum::<usize>();
    println!(
        "one host: the shell pack's result here, {blocks} blocks; {} of its queries differ per host",
        PER_HOST.len()
    );
    println!();
    println!("| hosts | distinct blocks | GETs (records + blocks) | GETs per host | read wall (median, min–max) |");
    println!("|---:|---:|---:|---:|---:|");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let aws = diffy_aws::AwsContext::new(moto.sdk_config(), diffy_aws::AwsOptions::default()).unwrap();
    for (k, &n) in sizes.iter().enumerate() {
        let bucket = format!("bench-{k}");
        moto.create_bucket(&bucket).unwrap();
        let url = format!("s3://{bucket}/store");
        let id = RunId::new("20261202T000000Z-000001").unwrap();
        rt.block_on(async {
            let store = BlobStore::s3(&url, &aws).await.unwrap();
            store.create_run(&shared::manifest(&id, n)).await.unwrap();
            futures::stream::iter(0..n)
                .for_each_concurrent(32, |i| {
                    let (store, id, r) = (store.clone(), id.clone(), host(&one, i));
                    async move { store.put_host_result(&id, &r).await.unwrap() }
                })
                .await;
        });
        let distinct: std::collections::BTreeSet<String> = (0..n)
            .flat_map(|i| {
                host(&one, i)
                    .queries
                    .into_iter()
                    .flat_map(|q| [(q.stdout_sha256, q.stdout), (q.stderr_sha256, q.stderr)])
            })
            .filter(|(_, b)| !b.is_empty())
            .map(|(sha, _)| sha)
            .collect();
        let (mut walls, mut gets) = (Vec::new(), 0);
        for _ in 0..runs {
            let (w, g) = rt.block_on(async {
                // A fresh store each time: nothing cached from the last read.
                let store = Arc::new(BlobStore::s3_existing(&url, &aws).await.unwrap());
                let before = store.requests().gets;
                let t = Instant::now();
                let hosts = store.list_host_results(&id).await.unwrap();
                let payload = Arc::new(store.get_run(&id).await.unwrap().payload);
                let mut obs = stored_observations(store.clone() as Arc<dyn Persistence>, id.clone(), hosts, payload);
                let mut read = 0;
                while let Some(o) = obs.next().await {
                    assert!(o.unwrap().status.is_collected());
                    read += 1;
                }
                assert_eq!(read, n);
                (t.elapsed().as_secs_f64(), store.requests().gets - before)
            });
            walls.push(w);
            gets = g;
        }
        let (med, lo, hi) = shared::spread(&walls);
        println!(
            "| {n} | {} | {gets} | {:.2} | {med:.2} s ({lo:.2}–{hi:.2}) |",
            distinct.len(),
            gets as f64 / n as f64
        );
    }
}
