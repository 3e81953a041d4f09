//! The local shell transport runs the collection conformance suite.

use diffy_core::{Host, LocalTransport, PerHost};
use diffy_testkit::conformance::{CollectionCaps, collection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let hosts: Vec<Host> = ["a", "b", "c"].iter().map(|h| Host::named(h).unwrap()).collect();
    collection(&PerHost::new(LocalTransport::new()), &hosts, CollectionCaps::default()).await;
}
