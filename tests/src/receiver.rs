//! A webhook receiver: a real HTTP server that records every request it is sent.

use axum::http::HeaderMap;
use std::sync::{Arc, Mutex};

/// The requests a [`receiver`] got: headers and body, in arrival order.
pub type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on `127.0.0.1:port`, path `/hook`, that records each POST and answers 204; it runs
/// until the test's runtime ends.
pub async fn receiver(port: u16) -> Received {
    let got: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |headers: HeaderMap, body: String| async move {
                got.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}
