//! The submit form, as the tests fill and check it.

use fantoccini::Client;
use pixelfarm_e2e::browser::{click, until};
use serde_json::json;

/// Put `text` in the manifest box, as a paste would.
pub async fn set_manifest(c: &Client, text: &str) {
    c.execute(
        "document.getElementById('manifest').value = arguments[0]",
        vec![json!(text)],
    )
    .await
    .unwrap();
}

/// Press Check and return the preview's job-count line.
pub async fn check(c: &Client) -> String {
    click(c, "#check").await;
    let line = until(
        c,
        "the submit check's preview",
        "return document.getElementById('preview-count')?.textContent",
        vec![],
    )
    .await;
    line.as_str().unwrap().to_string()
}
