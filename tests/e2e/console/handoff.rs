//! What a reviewer hands on: thumbnails made by the workers, the approved set downloaded from the
//! console, and an image rendered again, changed, from its detail dialog.

use fantoccini::Client;
use pixelfarm_core::sha256_hex;
use pixelfarm_e2e::browser::{Shots, click, element, until};
use serde_json::{Value, json};
use std::io::Read;

/// The batch's jobs as the gallery reads them, from the browser's session.
async fn jobs(c: &Client, batch: &str) -> Vec<Value> {
    let page = c
        .execute_async(
            "const [batch, done] = arguments;
             fetch(`/console/batches/${batch}/jobs`).then((r) => r.json()).then(done);",
            vec![json!(batch)],
        )
        .await
        .unwrap();
    page["jobs"].as_array().unwrap().clone()
}

/// With the detail dialog of `approved[0]` open on the page of `batch`.
pub async fn check(c: &Client, base: &str, batch: &str, approved: &[String], shots: &mut Shots) {
    // Tiles show thumbnails; a 32 px image is its own.
    let src = c
        .execute(
            "return document.querySelector(`figure[data-job='${arguments[0]}'] img`).getAttribute('src')",
            vec![json!(approved[0])],
        )
        .await
        .unwrap();
    assert_eq!(
        src,
        json!(format!("/console/jobs/{}/thumbnail", approved[0]))
    );
    assert_eq!(
        thumbnail(c, &approved[0]).await,
        json!([200, "image/png", 32, 32])
    );

    // The approved set as the download link fetches it: each approved image with its record.
    let cookie = c.get_named_cookie("pixelfarm_session").await.unwrap();
    let href = element(c, "#download-approved")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let res = reqwest::Client::new()
        .get(format!("{base}{href}"))
        .header("cookie", format!("pixelfarm_session={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"console-review-approved.tar\""
    );
    let tar = res.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut names = Vec::new();
    let mut images = std::collections::BTreeMap::new();
    let mut records = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let (stem, ext) = name.rsplit_once('.').unwrap();
        if ext == "json" {
            records.insert(
                stem.to_string(),
                serde_json::from_slice::<Value>(&data).unwrap(),
            );
        } else {
            assert_eq!(ext, "png", "{name}");
            images.insert(stem.to_string(), sha256_hex(&data));
        }
        names.push(name);
    }
    assert_eq!(names.len(), 6, "three images and their records: {names:?}");
    assert!(
        names[0].starts_with("00001-color=") && names[0].ends_with(".png"),
        "{names:?}"
    );
    let mut ids: Vec<&str> = records
        .values()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = approved.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "exactly the approved jobs");
    for (stem, record) in &records {
        assert_eq!(record["review"]["verdict"], "approved", "{record}");
        assert_eq!(Some(&images[stem][..]), record["sha256"].as_str(), "{stem}");
    }

    // Re-render with changes: the submit form holds the job's own manifest; the size changed,
    // it renders the same seed at 512 px, whose tile is a 256 px WebP thumbnail.
    let original = jobs(c, batch)
        .await
        .into_iter()
        .find(|j| j["id"] == json!(approved[0]))
        .unwrap();
    click(c, "#detail-rerender").await;
    let manifest = until(
        c,
        "the submit form with the job's manifest",
        "return location.pathname === '/console/submit' && document.getElementById('manifest').value",
        vec![],
    )
    .await;
    let manifest = manifest.as_str().unwrap();
    let seed = original["params"]["seed"].as_u64().unwrap();
    assert!(
        manifest.contains("name: console-review (re-render)")
            && manifest.contains(&format!("seed: {seed}")),
        "{manifest}"
    );
    c.execute(
        "const m = document.getElementById('manifest');
         m.value = m.value.replace('width: 32', 'width: 512').replace('height: 32', 'height: 512');",
        vec![],
    )
    .await
    .unwrap();
    let preview = super::form::check(c).await;
    assert!(preview.ends_with(": 1 job"), "{preview}");
    shots.take(c, "rerender-form").await;
    click(c, "button.primary").await;
    let again = until(
        c,
        "the re-render's batch done",
        "const m = location.pathname.match(/^\\/console\\/batches\\/([0-9a-f-]{36})$/);
         return m && document.getElementById('batch-progress')?.dataset.done === 'true' && m[1]",
        vec![],
    )
    .await;
    until(
        c,
        "the re-render's tile with its image",
        "return document.querySelector('#gallery figure[data-state=succeeded] img')",
        vec![],
    )
    .await;
    let rerendered = jobs(c, again.as_str().unwrap()).await;
    assert_eq!(rerendered.len(), 1);
    let job = &rerendered[0];
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["params"]["seed"], original["params"]["seed"]);
    assert_eq!(job["params"]["prompt"], original["params"]["prompt"]);
    assert_eq!(job["params"]["width"], 512);
    let id = job["id"].as_str().unwrap();
    assert_eq!(thumbnail(c, id).await, json!([200, "image/webp", 256, 256]));
    shots.take(c, "rerender-done").await;
}

/// Status, content type and pixel size of the thumbnail of `job`, as the browser gets it.
async fn thumbnail(c: &Client, job: &str) -> Value {
    c.execute_async(
        "const [id, done] = arguments;
         fetch(`/console/jobs/${id}/thumbnail`, {cache: 'no-store'}).then(async (r) => {
           const bitmap = await createImageBitmap(await r.blob());
           done([r.status, r.headers.get('content-type'), bitmap.width, bitmap.height]);
         });",
        vec![json!(job)],
    )
    .await
    .unwrap()
}
