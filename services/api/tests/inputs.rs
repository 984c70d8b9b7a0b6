//! Uploaded inputs through the API: an upload is checked before it is stored under the tenant's
//! prefix, a manifest names only its own tenant's inputs (another tenant's key gets the very
//! answer of a missing one), and inputs over the limits are refused at upload and at submit.

mod common;

use bytes::Bytes;
use pixelfarm_core::{BlobStore, ErrorKind, MAX_INPUT_BYTES, ModelName, TenantId};
use pixelfarm_image::testing::{png, png_bomb, png_declaring};

/// A one-job img2img manifest starting from `key` (`pin`: a sha256 to assert).
fn manifest(key: &str, pin: Option<&str>) -> String {
    let pin = pin
        .map(|p| format!(", sha256: \"{p}\""))
        .unwrap_or_default();
    format!(
        "name: from-input\nmodel: m\njobs:\n  - {{prompt: p, seed: 1, init: {{image: {{key: \"{key}\"{pin}}}, strength: 0.5}}}}\n"
    )
}

/// Every object under `inputs/` of the harness's blob folder.
async fn inputs(dir: &tempfile::TempDir) -> Vec<String> {
    pixelfarm_blob::LocalBlob::open(dir.path().join("blobs"))
        .await
        .unwrap()
        .list("inputs/")
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_is_stored_under_the_tenants_prefix_and_pinned_at_submit() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir,
    } = common::api(&["m"]).await;
    let bytes = png(48, 32, |x, y| [x as u8, y as u8, 7]);
    let up = api
        .upload(t, Some("product.png"), bytes.clone().into())
        .await
        .unwrap();
    assert_eq!(up.key, format!("inputs/{t}/product.png"));
    assert_eq!(up.sha256, pixelfarm_core::sha256_hex(&bytes));
    assert_eq!(
        (up.width, up.height, up.bytes),
        (48, 32, bytes.len() as u64)
    );
    assert_eq!(
        std::fs::read(dir.path().join("blobs").join(&up.key)).unwrap(),
        bytes
    );
    // No name: the sha256 names it.
    let unnamed = api.upload(t, None, bytes.clone().into()).await.unwrap();
    assert_eq!(unnamed.key, format!("inputs/{t}/{}.png", up.sha256));

    api.submit(t, manifest(&up.key, Some(&up.sha256)))
        .await
        .unwrap();
    let jobs = store
        .dispatchable(&ModelName::parse("m").unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
}

#[tokio::test]
async fn refused_uploads_say_why_and_store_nothing() {
    let common::Api {
        api,
        tenant: t,
        dir,
        ..
    } = common::api(&["m"]).await;
    let ok = || Bytes::from(png(8, 8, |_, _| [1; 3]));
    let over = MAX_INPUT_BYTES + 1;
    let cases: Vec<(Option<&str>, Bytes, String)> = vec![
        (
            Some("../escape"),
            ok(),
            "input name `../escape` is not accepted; accepted: 1 to 128 characters of A-Z a-z 0-9 . _ -, not starting with `.`".into(),
        ),
        (
            Some(".hidden"),
            ok(),
            "input name `.hidden` is not accepted".into(),
        ),
        (
            None,
            Bytes::from_static(b"GIF89a....."),
            "the upload is not an image; accepted: PNG, JPEG or WebP".into(),
        ),
        (
            Some("bomb"),
            png_declaring(13_000, 13_000).into(),
            "the upload is a PNG of 13000x13000 pixels (from its header); accepted: 1 to 4096 pixels a side".into(),
        ),
        (
            Some("bomb"),
            png_bomb(13_000).into(),
            "the upload is a PNG of 13000x13000 pixels (from its header); accepted: 1 to 4096 pixels a side".into(),
        ),
        (
            Some("lying"),
            png_declaring(64, 64).into(),
            "the upload does not decode as PNG".into(),
        ),
        (
            Some("big"),
            Bytes::from(vec![0u8; over as usize]),
            format!("the upload is {over} bytes; accepted: at most {MAX_INPUT_BYTES} bytes"),
        ),
    ];
    for (name, bytes, expected) in cases {
        let e = api.upload(t, name, bytes).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert!(
            e.to_string().starts_with(&expected),
            "{e}\nexpected: {expected}"
        );
    }
    assert!(
        inputs(&dir).await.is_empty(),
        "a refused upload stored nothing"
    );
}

#[tokio::test]
async fn another_tenants_input_gets_the_answer_of_a_missing_one() {
    let common::Api {
        api,
        store,
        tenant: a,
        dir: _dir,
    } = common::api(&["m"]).await;
    let b = store.create_tenant("b", 1).await.unwrap();
    let theirs = api
        .upload(a, Some("secret"), png(16, 16, |_, _| [9; 3]).into())
        .await
        .unwrap();
    // The answer with the key itself blanked out: the client's own text, echoed.
    let refusal = |tenant: TenantId, key: String, pin: Option<String>| {
        let api = &api;
        async move {
            let e = api
                .submit(tenant, manifest(&key, pin.as_deref()))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
            e.to_string().replace(&key, "KEY")
        }
    };
    let missing = refusal(b, format!("inputs/{b}/nothing.png"), None).await;
    assert_eq!(
        missing,
        format!(
            "manifest field `init.image`: `KEY` is not one of your inputs; accepted: a key that an upload answered (`pixelfarm upload FILE`, PUT /v1/inputs/{{name}}), which starts with `inputs/{b}/`"
        )
    );
    for (key, pin) in [
        (theirs.key.clone(), None),
        // A pin of the right sha256 changes nothing: no "pins" mismatch to compare against.
        (theirs.key.clone(), Some(theirs.sha256.clone())),
        (theirs.key.clone(), Some("0".repeat(64))),
        (format!("inputs/{a}/nothing.png"), None),
        (format!("inputs/{b}/../{a}/secret.png"), None),
        ("inputs/secret.png".into(), None),
    ] {
        let answer = refusal(b, key.clone(), pin).await;
        assert_eq!(answer, missing, "{key}");
        assert!(!answer.contains(&theirs.sha256) && !answer.contains(&a.to_string()));
    }
    assert!(
        store
            .dispatchable(&ModelName::parse("m").unwrap(), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
    // The owner names it.
    api.submit(a, manifest(&theirs.key, None)).await.unwrap();
}

#[tokio::test]
async fn objects_over_the_limits_are_refused_at_submit() {
    let common::Api {
        api,
        tenant: t,
        dir,
        ..
    } = common::api(&["m"]).await;
    // Objects written into the tenant's prefix past the upload's checks (by an operator, or
    // before the checks existed).
    let blob = pixelfarm_blob::LocalBlob::open(dir.path().join("blobs"))
        .await
        .unwrap();
    let over = MAX_INPUT_BYTES + 1;
    let cases = [
        (
            "bomb.png",
            png_bomb(13_000),
            "is a PNG of 13000x13000 pixels (from its header); accepted: 1 to 4096 pixels a side"
                .to_string(),
        ),
        (
            "big.png",
            vec![0u8; over as usize],
            format!("is {over} bytes; accepted: at most {MAX_INPUT_BYTES} bytes"),
        ),
        (
            "text.png",
            b"hello".to_vec(),
            "is not an image; accepted: PNG, JPEG or WebP".to_string(),
        ),
    ];
    for (name, bytes, expected) in cases {
        let key = format!("inputs/{t}/{name}");
        blob.put(&key, bytes.into(), "image/png").await.unwrap();
        let e = api.submit(t, manifest(&key, None)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        let e = e.to_string();
        assert!(
            e.starts_with("manifest field `init.image`: ")
                && e.contains(&key)
                && e.ends_with(&expected),
            "{e}\nexpected: {expected}"
        );
    }
}
