//! Listing a batch's jobs: every page but the last carries a cursor, the last none, and a limit
//! outside `1..=MAX_PAGE` is refused rather than replaced.

mod common;

use pixelfarm_api::service::{DEFAULT_PAGE, MAX_PAGE};

use pixelfarm_core::ErrorKind;

#[tokio::test]
async fn pages_have_a_cursor_while_jobs_follow() {
    let common::Api {
        api,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&["m"]).await;
    let out = api
        .submit(
            t,
            "name: b\nmodel: m\ndefaults: {width: 16, height: 16, steps: 2}\nprompt: p\nseeds: {base: 1, count: 5}\n".into(),
        )
        .await
        .unwrap();
    let b = out.batch_id;

    for limit in [1, 2, 3, 4, 5, 6] {
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let p = api.page(t, b, after, Some(limit)).await.unwrap();
            pages += 1;
            assert!(p.jobs.len() <= limit as usize);
            seen.extend(p.jobs.iter().map(|j| j.id));
            match p.next {
                Some(n) => {
                    assert_eq!(p.jobs.len(), limit as usize, "a cursor only on a full page");
                    assert_eq!(Some(n), p.jobs.last().map(|j| j.id));
                    after = Some(n);
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), 5, "limit {limit}: every job once");
        assert_eq!(
            pages,
            5usize.div_ceil(limit as usize),
            "limit {limit}: no empty last page"
        );
    }

    let all = api.page(t, b, None, None).await.unwrap();
    assert_eq!(
        (all.jobs.len(), all.next),
        (5, None),
        "default {DEFAULT_PAGE}"
    );

    for bad in [0, MAX_PAGE + 1, u32::MAX] {
        let e = api.page(t, b, None, Some(bad)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(
            e.to_string(),
            format!("`limit` {bad} is out of range; accepted: 1 to 10000 (default 1000)")
        );
    }
}
