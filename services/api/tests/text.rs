//! The text policy holds in the embedded mode's store (SQLite) as in Postgres: refused at parse,
//! naming the field, nothing stored (docs/security.md, "Text").

mod common;

use pixelfarm_core::ErrorKind;

#[tokio::test]
async fn sqlite_refuses_what_postgres_refuses() {
    let common::Api {
        api,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&["m"]).await;
    let m = |name: &str, prompt: &str| {
        format!(
            "name: \"{name}\"\nmodel: m\ndefaults: {{width: 16, height: 16, steps: 2}}\nprompt: \"{prompt}\"\nseeds: [1]\n"
        )
    };
    for (manifest, field, what) in [
        (
            m("n", "a\\0b"),
            "manifest field `prompt` (line 4)",
            "U+0000 (NUL)",
        ),
        (
            m("a\\0b", "p"),
            "manifest field `name` (line 1)",
            "U+0000 (NUL)",
        ),
        (
            m("x\\u202Ey", "p"),
            "manifest field `name` (line 1)",
            "U+202E",
        ),
        (
            m("n", "a\\e[2Jb"),
            "manifest field `prompt` (line 4)",
            "U+001B (escape)",
        ),
    ] {
        let e = api.submit(t, manifest).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let e = e.to_string();
        assert!(e.starts_with(field) && e.contains(what), "{e}");
    }
    let ok = api.submit(t, m("n", "line one\\nline two")).await.unwrap();
    let jobs = api.jobs(t, ok.batch_id, None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "only the accepted batch is stored");
    assert_eq!(jobs[0].params.prompt.as_str(), "line one\nline two");
}
