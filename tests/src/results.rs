//! What a test checks of a batch: that it reaches a state, and that its results are complete.

use futures::StreamExt;
use pixelfarm_api::{ApiClient, BatchView};
use pixelfarm_core::{BatchId, BlobStore, sha256_hex, thumbnail_key};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::Stack;

/// Poll `batch` until `cond` holds (or panic after `timeout` with the stack's logs).
pub async fn wait_batch(
    stack: &Stack,
    client: &ApiClient,
    batch: BatchId,
    timeout: Duration,
    cond: impl Fn(&BatchView) -> bool,
) -> BatchView {
    let deadline = Instant::now() + timeout;
    loop {
        let v = client.batch(batch).await.unwrap();
        if cond(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "batch not there within {timeout:?}: {:?}\n{}",
            v.status.counts,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submit `manifest`, wait until its batch is done, check that `succeeded` of its jobs did (else
/// panic with the counts and the stack's logs), and return its id and jobs (the first 100).
pub async fn render_batch(
    stack: &Stack,
    client: &ApiClient,
    manifest: String,
    succeeded: u64,
) -> (BatchId, Vec<pixelfarm_core::JobRecord>) {
    let out = client.submit(manifest).await.unwrap();
    let v = wait_batch(stack, client, out.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    assert_eq!(
        v.status.counts.succeeded,
        succeeded,
        "{:?}\n{}",
        v.status.counts,
        stack.logs()
    );
    let jobs = client.jobs(out.batch_id, None, 100).await.unwrap().0;
    (out.batch_id, jobs)
}

/// What a user checks once a batch of `jobs` is done: `pixelfarm fetch` writes `results.jsonl`
/// naming `jobs` succeeded jobs and images whose bytes match their sha256, the keys are distinct
/// (content-addressed), and the bucket holds exactly those images with those bytes. Returns the
/// object key → sha256 map.
pub async fn verify_results(
    stack: &Stack,
    client: &ApiClient,
    batch: BatchId,
    jobs: u64,
) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let summary = pixelfarm_cli::export::export(client, batch, dir.path())
        .await
        .unwrap();
    assert_eq!((summary.jobs, summary.images), (jobs, jobs));
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.path().join("results.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["state"], "succeeded");
        let (key, sha) = (
            v["object_key"].as_str().unwrap(),
            v["sha256"].as_str().unwrap(),
        );
        let file = std::fs::read(dir.path().join(v["file"].as_str().unwrap())).unwrap();
        assert_eq!(sha256_hex(&file), sha);
        by_key.insert(key.to_string(), sha.to_string());
    }
    assert_eq!(
        by_key.len() as u64,
        jobs,
        "{jobs} distinct content-addressed keys"
    );
    let blob = stack.blob().await;
    let objects = blob.list("images/").await.unwrap();
    let of_kind = |suffix: &str| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|k| k.ends_with(suffix))
            .cloned()
            .collect()
    };
    assert_eq!(
        of_kind(".png"),
        by_key.keys().cloned().collect::<BTreeSet<_>>(),
        "the bucket holds exactly the images of the results"
    );
    let thumbnails: BTreeSet<String> = by_key.keys().filter_map(|k| thumbnail_key(k)).collect();
    assert!(
        of_kind(".thumb.webp").is_subset(&thumbnails),
        "every thumbnail sits beside an image of the results"
    );
    let blob = &blob;
    futures::stream::iter(&by_key)
        .for_each_concurrent(8, |(key, sha)| async move {
            assert_eq!(&sha256_hex(&blob.get(key).await.unwrap()), sha, "{key}");
        })
        .await;
    by_key
}
