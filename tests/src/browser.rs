//! A real headless Chromium for the console's tests: Debian's `chromium` driven through
//! `chromedriver` (`PIXELFARM_CHROMIUM`, `PIXELFARM_CHROMEDRIVER` name others), and what the
//! tests do with it.

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::{free_port, repo};

/// A hang guard for each wait, not a timing the console must meet.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// `chromedriver` on a free port, killed when dropped.
pub struct Driver {
    _child: Child,
    url: String,
}

pub async fn driver() -> Driver {
    let port = free_port();
    let exe = std::env::var("PIXELFARM_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{exe} does not start ({e}): apt install chromium-driver"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { _child: child, url }
}

/// A browser session: headless, 1400×1000, English.
pub async fn browser(driver: &Driver) -> Client {
    let binary = std::env::var("PIXELFARM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--lang=en-US"],
        }),
    );
    ClientBuilder::rustls()
        .expect("tls roots")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Screenshots, numbered in the order taken.
pub struct Shots {
    dir: PathBuf,
    n: u32,
}

impl Shots {
    /// Screenshots under `target/console-screenshots/`, emptied first.
    pub fn fresh() -> Shots {
        let dir = repo().join("target/console-screenshots");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Shots { dir, n: 0 }
    }

    /// Save the page as `NN-name.png`.
    pub async fn take(&mut self, c: &Client, name: &str) {
        self.n += 1;
        let png = c.screenshot().await.unwrap();
        std::fs::write(self.dir.join(format!("{:02}-{name}.png", self.n)), png).unwrap();
    }
}

/// Evaluate `script` (a function body; `arguments` holds `args`) until it returns a truthy value.
pub async fn until(c: &Client, what: &str, script: &str, args: Vec<Value>) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = c.execute(script, args.clone()).await.unwrap();
        let truthy =
            !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
        if truthy {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {v} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The element `css` names, once there is one (a click that navigates returns before the next
/// page is in).
pub async fn element(c: &Client, css: &str) -> Element {
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// The text of the element `css` names, once there is one.
pub async fn text(c: &Client, css: &str) -> String {
    element(c, css).await.text().await.unwrap()
}

/// How many elements `css` names now.
pub async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

/// Open the console at `base` and sign in with `key`; returns on the batches page.
pub async fn sign_in(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/console")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/login", "signed out: the sign-in form");
    element(c, "#key").await.send_keys(key).await.unwrap();
    click(c, ".login button[type=submit]").await;
    until(
        c,
        "the batches page after signing in",
        "return location.pathname === '/console/batches'",
        vec![],
    )
    .await;
}

/// Check the page against the WCAG 2.1 A and AA rules and axe-core's best practices
/// (`PIXELFARM_AXE` names its `axe.min.js`; `scripts/browser-tests` fetches it from npm); a
/// failure lists each broken rule as `[rule, impact, how many elements, the first one]`.
pub async fn assert_accessible(c: &Client, page: &str) {
    let path = std::env::var("PIXELFARM_AXE")
        .expect("PIXELFARM_AXE names axe.min.js (scripts/browser-tests fetches it from npm)");
    let axe = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    c.execute(&format!("{axe}\nreturn true;"), vec![])
        .await
        .unwrap();
    let found = c
        .execute_async(
            "const done = arguments[0];
             axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']})
               .then((r) => done(r.violations.map((v) =>
                 [v.id, v.impact, v.nodes.length, v.nodes[0].target.join(' ')])));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, json!([]), "{page}: accessibility rules broken");
}

/// Click the element `css` names, once there is one.
pub async fn click(c: &Client, css: &str) {
    element(c, css).await.click().await.unwrap();
}

/// Choose `value` in the `<select>` `css` names, once there is one.
pub async fn select(c: &Client, css: &str, value: &str) {
    element(c, css).await.select_by_value(value).await.unwrap();
}
