//! The console's answers outside the browser: cookie attributes, CSRF and origin checks,
//! answers without a session.

use pixelfarm_e2e::{KEY_A, Stack, StackOptions};
use serde_json::{Value, json};

/// What the browser does not show: cookie attributes, CSRF and origin checks, answers without a
/// session.
#[tokio::test]
async fn sessions_refuse_forged_and_missing_credentials() {
    let stack = Stack::start(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let base = format!("http://{}", stack.scheduler.http);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let page = http
        .get(format!("{base}/console/batches"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        303,
        "a page without a session goes to sign in"
    );
    assert_eq!(page.headers()["location"], "/console/login");
    let call = http
        .get(format!("{base}/console/batches/{}/jobs", uuid::Uuid::nil()))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 401, "a script's call gets the API's error");
    let body: Value = call.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    let login = http
        .post(format!("{base}/console/login"))
        .form(&[("key", KEY_A)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let set = login.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{set}");
    }
    let csp = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let cookie = set.split(';').next().unwrap().to_string();

    // A signed-in page carries the CSRF token; a change without it, or from another origin, is
    // refused.
    let page = http
        .get(format!("{base}/console/submit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64);
    let review = |token: Option<&str>, origin: Option<&str>| {
        let mut r = http
            .post(format!("{base}/console/reviews"))
            .header("cookie", &cookie)
            .json(&json!({"jobs": [uuid::Uuid::nil()], "verdict": "approved"}));
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    for (token, origin, says) in [
        (None, None, "CSRF token does not match"),
        (Some("0".repeat(64)), None, "CSRF token does not match"),
        (
            Some(csrf.clone()),
            Some("https://evil.example"),
            "came from another site",
        ),
    ] {
        let res = review(token.as_deref(), origin).await.unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let res = review(Some(&csrf), Some(&base)).await.unwrap();
    assert_eq!(res.status(), 400, "the token passes; the job is unknown");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not succeeded jobs")
    );

    // Signing out ends the session on the server, whatever the browser keeps.
    let out = http
        .post(format!("{base}/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = http
        .get(format!("{base}/console/batches"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303, "the old cookie opens nothing");
}
