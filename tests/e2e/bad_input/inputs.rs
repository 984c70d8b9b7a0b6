//! Uploads, and the inputs a manifest names.

use pixelfarm_e2e::*;
use serde_json::Value;

use super::{http_error, yaml};

/// A one-job manifest of model `test` starting from the input `key`.
fn from_input(key: &str) -> String {
    yaml(&format!(
        "name: n\njobs: [{{prompt: p, init: {{image: {{key: \"{key}\"}}, strength: 0.5}}}}]\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_are_checked_before_they_are_stored_and_named_only_by_their_tenant() {
    use pixelfarm_core::{BlobStore, ErrorKind, MAX_INPUT_BYTES, sha256_hex};
    use pixelfarm_image::testing::{png, png_bomb, png_declaring};

    let stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let prefix = stack.prefix.clone();
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let http = format!("http://{}", stack.scheduler.http);
    let client = unpooled_client();
    let blob = stack.blob().await;
    let (a, b) = (stack.client(KEY_A).await, stack.client(KEY_B).await);
    let put = |path: &str, key: &str, body: Vec<u8>| {
        client
            .put(format!("{http}{path}"))
            .bearer_auth(key)
            .body(body)
            .send()
    };

    // Tenant a uploads over HTTP, named, and over gRPC, unnamed (its sha256 names it).
    let secret = png(48, 48, |x, y| [x as u8, y as u8, 200]);
    let r = put("/v1/inputs/secret.png", KEY_A, secret.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let up: Value = r.json().await.unwrap();
    let a_key = up["key"].as_str().unwrap().to_string();
    let a_prefix = a_key.strip_suffix("secret.png").unwrap().to_string();
    let sha = sha256_hex(&secret);
    assert_eq!(
        (
            up["sha256"].as_str(),
            up["format"].as_str(),
            up["width"].as_u64(),
            up["height"].as_u64()
        ),
        (Some(sha.as_str()), Some("png"), Some(48), Some(48))
    );
    assert!(a_prefix.starts_with("inputs/"), "{a_key}");
    assert_eq!(blob.get(&a_key).await.unwrap(), secret, "stored as sent");
    let unnamed = a.upload(None, secret.clone().into()).await.unwrap();
    assert_eq!(unnamed.key, format!("{a_prefix}{sha}.png"));
    let r = client
        .post(format!("{http}/v1/inputs"))
        .bearer_auth(KEY_A)
        .body(secret.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap()["key"].as_str(),
        Some(unnamed.key.as_str()),
        "the same bytes, the same key over HTTP"
    );
    // And with the CLI, which prints the key to put in a manifest.
    let dir = tempfile::tempdir().unwrap();
    let cli = |file: &str, bytes: &[u8]| {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        std::process::Command::new(bin("pixelfarm"))
            .arg("upload")
            .arg(&path)
            .args(["--name", "from-cli"])
            .env("PIXELFARM_API_URL", &stack.grpc_url)
            .env("PIXELFARM_API_KEY", KEY_A)
            .output()
            .unwrap()
    };
    let out = cli("photo.png", &secret);
    assert!(out.status.success(), "{out:?}");
    let cli_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(cli_key, format!("{a_prefix}from-cli.png"));
    assert_eq!(blob.get(&cli_key).await.unwrap(), secret);
    let out = cli("bomb.png", &png_declaring(13_000, 13_000));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the upload is a PNG of 13000x13000 pixels (from its header)"),
        "{err}"
    );
    let b_prefix = b
        .upload(Some("mine"), png(8, 8, |_, _| [1; 3]).into())
        .await
        .unwrap()
        .key
        .strip_suffix("mine.png")
        .unwrap()
        .to_string();
    assert_ne!(a_prefix, b_prefix);

    // Tenant b naming a's input gets exactly the answer of a key that does not exist, over HTTP
    // and gRPC; the key itself, b's own text, is the only difference.
    let before = stored(&db).await;
    let answer = |key: String| {
        let (client, http, prefix, b) = (&client, &http, &prefix, &b);
        async move {
            let r = client
                .post(format!("{http}/v1/batches"))
                .bearer_auth(KEY_B)
                .body(from_input(&key))
                .send()
                .await
                .unwrap();
            let (status, code, message) = http_error(r, prefix).await;
            let e = b.submit(from_input(&key)).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid);
            assert_eq!(e.to_string(), message, "the same message over gRPC");
            (status, code, message.replace(&key, "KEY"))
        }
    };
    let missing = answer(format!("{b_prefix}nothing.png")).await;
    assert_eq!((missing.0, missing.1.as_str()), (400, "invalid_argument"));
    assert!(
        missing
            .2
            .starts_with("manifest field `init.image`: `KEY` is not one of your inputs"),
        "{}",
        missing.2
    );
    for key in [
        a_key.clone(),
        unnamed.key.clone(),
        format!("{a_prefix}nothing.png"),
    ] {
        let got = answer(key.clone()).await;
        assert_eq!(got, missing, "{key}");
        assert!(
            !got.2.contains(&sha) && !got.2.contains(&a_prefix),
            "{got:?}"
        );
    }
    assert_eq!(stored(&db).await, before, "nothing stored");

    // PNG bombs (a header declaring 13000x13000; a real one whose pixels need 507 MB) are
    // refused from the header, over HTTP and gRPC.
    let bomb_says = "the upload is a PNG of 13000x13000 pixels (from its header); accepted: 1 to 4096 pixels a side";
    for bomb in [png_declaring(13_000, 13_000), png_bomb(13_000)] {
        let (status, code, message) = http_error(
            put("/v1/inputs/bomb", KEY_A, bomb.clone()).await.unwrap(),
            &prefix,
        )
        .await;
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (400, "invalid_argument", bomb_says)
        );
        let e = a.upload(Some("bomb"), bomb.into()).await.unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (ErrorKind::Invalid, bomb_says)
        );
    }
    // Over the size limit: HTTP answers 413 at the limit, gRPC stops reading there.
    let too_big = format!(
        "the upload is larger than {MAX_INPUT_BYTES} bytes; accepted: at most {MAX_INPUT_BYTES} bytes"
    );
    let big = vec![0u8; MAX_INPUT_BYTES as usize + 1];
    let (status, code, message) = http_error(
        put("/v1/inputs/big", KEY_A, big.clone()).await.unwrap(),
        &prefix,
    )
    .await;
    assert_eq!(
        (status, code.as_str(), message.as_str()),
        (413, "payload_too_large", too_big.as_str())
    );
    // The key is checked before the body is read: curl, waiting for `100 Continue` before it
    // sends a body, gets the 401 having sent none of it.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &big).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_upload}",
        ])
        .args(["-X", "PUT", "-H", "authorization: Bearer not-a-key"])
        .args(["-H", "expect: 100-continue", "--expect100-timeout", "30"])
        .arg("--data-binary")
        .arg(format!("@{}", file.path().display()))
        .arg(format!("{http}/v1/inputs/big"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401 0", "{out:?}");
    let e = a.upload(Some("big"), big.into()).await.unwrap_err();
    assert_eq!((e.kind(), e.to_string()), (ErrorKind::Invalid, too_big));
    // A bad name is refused before the bytes are looked at.
    let (status, _, message) = http_error(
        put("/v1/inputs/.hidden", KEY_A, secret.clone())
            .await
            .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.starts_with("input name `.hidden` is not accepted"),
        "{message}"
    );
    let mut objects = blob.list(&a_prefix).await.unwrap();
    objects.sort();
    let mut expected = vec![a_key.clone(), unnamed.key.clone(), cli_key];
    expected.sort();
    assert_eq!(objects, expected, "no refused upload stored anything");

    // Objects that reached the prefix past the upload's checks (an operator's copy): a bomb and
    // a 256 MiB object are refused at submit, naming the field, without being decoded or read
    // whole (the scheduler's peak RSS grows by far less than either would take).
    let pid = stack.scheduler.child.id().expect("the scheduler runs");
    let bomb_key = format!("{a_prefix}bomb.png");
    let huge_key = format!("{a_prefix}huge.png");
    blob.put(&bomb_key, png_bomb(13_000).into(), "image/png")
        .await
        .unwrap();
    blob.put(&huge_key, vec![0u8; 256 << 20].into(), "image/png")
        .await
        .unwrap();
    let peak = vm_hwm_mib(pid);
    let submit_a = |key: &str| {
        client
            .post(format!("{http}/v1/batches"))
            .bearer_auth(KEY_A)
            .body(from_input(key))
            .send()
    };
    let (status, _, message) = http_error(submit_a(&bomb_key).await.unwrap(), &prefix).await;
    assert_eq!(
        (status, message),
        (
            400,
            format!(
                "manifest field `init.image`: `{bomb_key}` is a PNG of 13000x13000 pixels (from its header); accepted: 1 to 4096 pixels a side"
            )
        )
    );
    let (status, _, message) = http_error(submit_a(&huge_key).await.unwrap(), &prefix).await;
    assert_eq!(
        (status, message),
        (
            400,
            format!(
                "manifest field `init.image`: object `{huge_key}` is {} bytes; accepted: at most {MAX_INPUT_BYTES} bytes",
                256 << 20
            )
        )
    );
    let grown = vm_hwm_mib(pid).saturating_sub(peak);
    assert!(grown < 128, "the scheduler's peak RSS grew by {grown} MiB");
    assert_eq!(stored(&db).await, before, "nothing stored");
}
