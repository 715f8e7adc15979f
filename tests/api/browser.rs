//! The board page in a real headless Chromium, driven through chromedriver's WebDriver API:
//! load the board, post a webhook, see the cell change within two seconds, save a screenshot.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them and sets
//! SHIPLOG_REQUIRE_BROWSER=1, so there the test cannot be skipped). Elsewhere, without a
//! browser, it says so and passes without running.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::spawn_app;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    base: String,
    client: reqwest::Client,
    session: String,
}

impl Driver {
    async fn start(profile: &std::path::Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,640",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let session: Value = client
            .post(format!("{base}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
            } } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        Driver {
            child,
            base,
            client,
            session,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json::<Value>().await.unwrap()["value"].clone()
    }

    /// The text of the first element matching a CSS selector, if any.
    async fn text(&self, selector: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await;
        let id = found.as_object()?.values().next()?.as_str()?.to_string();
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .map(str::to_string)
    }

    /// Runs a script in the page and returns its value.
    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Saves a screenshot of the window under the test target's tmp directory (the README's
    /// pictures come from here).
    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let screenshot = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(screenshot.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&out, &png).unwrap();
        eprintln!("screenshot: {}", out.display());
    }

    /// Polls until the selector's text contains `needle`; returns how long it took.
    async fn wait_for_text(&self, selector: &str, needle: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.text(selector).await.is_some_and(|t| t.contains(needle)) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_board_page_updates_a_cell_live_in_a_real_browser() {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var("SHIPLOG_REQUIRE_BROWSER").is_err(),
            "SHIPLOG_REQUIRE_BROWSER is set but chromium/chromium-driver are not installed"
        );
        eprintln!(
            "skipped: install Debian's chromium and chromium-driver to run the browser test (.ci/run does)"
        );
        return;
    }
    let app = spawn_app().await;
    app.deliver(
        json!({ "id": "b-1", "system": "billing", "environment": "production", "status": "succeeded",
        "version": "1.4.1", "actor": "ada", "finishedAt": shiplog::domain::now_millis() - 3 * 3_600_000,
        "url": "https://ci.example.com/job/billing/41" }),
    )
    .await;
    // A cell whose only deployment was cancelled is not a cell never deployed to.
    app.deliver(
        json!({ "id": "s-0", "system": "search", "environment": "production", "status": "cancelled",
        "version": "1.9.9", "actor": "grace", "finishedAt": shiplog::domain::now_millis() - 1_200_000 }),
    )
    .await;
    app.deliver(
        json!({ "id": "s-1", "system": "search", "environment": "staging", "status": "succeeded",
        "version": "2.0.0", "actor": "grace", "finishedAt": shiplog::domain::now_millis() - 600_000 }),
    )
    .await;
    // A review app: in the board's one collapsible column for ephemeral environments.
    app.deliver(
        json!({ "id": "r-7", "system": "billing", "environment": "review/feature-x", "status": "succeeded",
        "version": "pr-7", "finishedAt": shiplog::domain::now_millis() - 60_000 }),
    )
    .await;
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path()).await;
    driver
        .call(
            reqwest::Method::POST,
            "/url",
            Some(json!({ "url": app.url("/") })),
        )
        .await;
    let cell = r#"td[data-system="billing"][data-environment="production"]"#;
    assert!(
        driver
            .wait_for_text(cell, "1.4.1", Duration::from_secs(10))
            .await
            .is_some(),
        "the board loaded"
    );
    assert!(
        driver
            .wait_for_text("#live", "live", Duration::from_secs(10))
            .await
            .is_some(),
        "the page connected"
    );
    // graphql-transport-ws does not acknowledge a subscribe: wait until the server has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.hub.subscribers() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.hub.subscribers(), 1, "the page subscribed");

    app.deliver(
        json!({ "id": "b-2", "system": "billing", "environment": "production", "status": "running",
        "version": "1.5.0", "actor": "linus", "startedAt": shiplog::domain::now_millis() }),
    )
    .await;
    let took = driver.wait_for_text(cell, "1.5.0", Duration::from_secs(2)).await;
    assert!(
        took.is_some(),
        "the cell changed within two seconds of the webhook"
    );
    eprintln!(
        "the cell changed {:?} after the webhook was accepted",
        took.unwrap_or_default()
    );
    // The page re-renders on every event: read again rather than trust one (maybe stale) element.
    // What runs there is "live"; what is not finished is "on its way", in its own words.
    for needle in ["1.4.1", "live", "on its way: 1.5.0", "deploying", "linus"] {
        assert!(
            driver
                .wait_for_text(cell, needle, Duration::from_secs(2))
                .await
                .is_some(),
            "the cell shows {needle}: {:?}",
            driver.text(cell).await
        );
    }
    let cancelled = r#"td[data-system="search"][data-environment="production"]"#;
    let shown = driver.text(cancelled).await.unwrap_or_default();
    assert!(
        shown.contains("cancelled: 1.9.9") && shown.contains("nothing live yet"),
        "the cancelled-only cell says so: {shown:?}"
    );
    let never = r#"td[data-system="billing"][data-environment="staging"]"#;
    assert_eq!(
        driver.text(never).await.as_deref(),
        Some("—"),
        "a cell never deployed to"
    );
    driver.screenshot("board.png").await;

    // Each cell opens its deployment's details, with a link to the tool.
    driver
        .script(r#"document.querySelector('td[data-system="billing"][data-environment="production"] .progress a.details').click()"#)
        .await;
    assert!(
        driver
            .wait_for_text("dialog#details", "linus", Duration::from_secs(5))
            .await
            .is_some(),
        "the details dialog opened: {:?}",
        driver.text("dialog#details").await
    );
    let details = driver.text("dialog#details").await.unwrap_or_default();
    assert!(details.contains("deploying (running)"), "{details}");
    assert!(
        details.contains("rule generic.deployment_events"),
        "why it is here: {details}"
    );
    driver
        .script("document.getElementById('close-details').click()")
        .await;
    let ephemeral = driver
        .script(
            r#"const column = document.querySelector('th.ephemeral');
               const summary = document.querySelector('td.ephemeral details summary');
               const review = document.querySelector('td.ephemeral td[data-environment="review/feature-x"]');
               return [column && column.textContent, summary && summary.textContent, review && review.textContent,
                       [...document.querySelectorAll('thead th')].map((th) => th.textContent)];"#,
        )
        .await;
    assert_eq!(ephemeral[0], "ephemeral (1)", "{ephemeral}");
    assert_eq!(ephemeral[1], "1 environment", "{ephemeral}");
    assert!(
        ephemeral[2].as_str().unwrap_or("").contains("pr-7"),
        "{ephemeral}"
    );
    assert!(
        !ephemeral[3]
            .as_array()
            .unwrap()
            .contains(&json!("review/feature-x")),
        "a review app is not a column of its own: {ephemeral}"
    );
    let tool_link = driver
        .script(r#"return document.querySelector('td[data-system="billing"][data-environment="production"] a.tool').href"#)
        .await;
    assert_eq!(tool_link, "https://ci.example.com/job/billing/41");

    // A phone or a split screen: the header wraps and every control stays on screen; the
    // table scrolls sideways inside the page.
    driver
        .call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 420, "height": 800 })),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let layout = driver
        .script(
            "const controls = [...document.querySelectorAll('header input, header button, header a.button')];
             return { width: document.documentElement.clientWidth,
                      page: document.documentElement.scrollWidth,
                      controls: controls.map((c) => c.getBoundingClientRect().right),
                      lefts: controls.map((c) => c.getBoundingClientRect().left) };",
        )
        .await;
    let width = layout["width"].as_f64().unwrap();
    assert!(width <= 420.0, "the window is narrow: {layout}");
    assert!(
        layout["page"].as_f64().unwrap() <= width,
        "nothing overflows the page: {layout}"
    );
    let controls = layout["controls"].as_array().unwrap();
    assert_eq!(controls.len(), 4, "{layout}");
    for (right, left) in controls.iter().zip(layout["lefts"].as_array().unwrap()) {
        assert!(
            right.as_f64().unwrap() <= width && left.as_f64().unwrap() >= 0.0,
            "a control is off-screen: {layout}"
        );
    }
    driver.screenshot("board-narrow.png").await;

    let icon = app.client.get(app.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(icon.status(), 200, "browsers ask for /favicon.ico");
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");

    // GraphiQL renders from the binary's own assets (no network needed).
    driver
        .call(
            reqwest::Method::POST,
            "/url",
            Some(json!({ "url": app.url("/graphql") })),
        )
        .await;
    assert!(
        driver
            .wait_for_text(".graphiql-container", "deployments", Duration::from_secs(15))
            .await
            .is_some(),
        "GraphiQL rendered with its default query"
    );
    driver.call(reqwest::Method::DELETE, "", None).await;
}
