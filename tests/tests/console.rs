//! The web console (issue 12 item 5) in a real headless browser: Debian's chromium driven by
//! chromedriver over the WebDriver HTTP API. Log in, see the active node, send a message and see
//! the queue's depth go to 1 without reloading, browse it, purge it; screenshots of each step go
//! to `target/test-artifacts/console/`, and the browser's console must log no error.
//!
//! Needs `chromium` and `chromium-driver`, which only root can install, so the test is
//! `#[ignore]`d: tests/run-all.sh installs them as root and runs it with `--include-ignored`.
//! Run where the browser is missing, it fails with what to install, never passes unrun.

use base64ct::Encoding;
use ha_tests::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `admin` (password `password`, `ctl passwd --password password`) in the console group, and
/// `app`, with the same password, outside it.
const USERS: &str = "allow_anonymous = true\n\
[users.admin]\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$m/tq9pPX9fc6jlcYHpqG+Q$L3fSgC3jpAJqH+qKy/uo8frfqe7gBCmFTFmePDJmkls\"\ngroups = [\"admins\"]\n\
[users.app]\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$m/tq9pPX9fc6jlcYHpqG+Q$L3fSgC3jpAJqH+qKy/uo8frfqe7gBCmFTFmePDJmkls\"\ngroups = [\"apps\"]\n";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const QUEUE: &str = "/queue/console-test";
/// Markup in a body must arrive as text.
const BODY: &str = "hello <b>console</b>";

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser {
    driver: Driver,
    session: String,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_until("chromedriver to answer", || {
            let status = http::get(driver.addr, "/status").ok()?;
            let status: Value = serde_json::from_str(&status.body).ok()?;
            (status["value"]["ready"] == true).then_some(())
        });
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100",
                         format!("--user-data-dir={}", profile.display())],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let mut browser = Browser {
            driver,
            session: String::new(),
        };
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let response = http::request(
            self.driver.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_deref(),
            WAIT * 2,
        )
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e:#}"));
        let answer: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {}", response.body));
        assert_eq!(response.status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page; what it returns.
    fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The element `css` selects, once there is one.
    fn find(&self, css: &str) -> String {
        let script = format!("return document.querySelector({}) !== null;", json!(css));
        wait_until(&format!("the page to show {css}"), || {
            (self.eval(&script) == true).then_some(())
        });
        let found = self.session_call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT].as_str().expect("an element id").to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.session_call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The text of what `css` selects, or None while nothing does.
    fn text(&self, css: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        );
        self.eval(&script).as_str().map(str::to_owned)
    }

    /// Waits until the text of `css` is `want`, without reloading the page.
    fn wait_for_text(&self, css: &str, want: &str) {
        wait_until(&format!("{css} to read {want:?}"), || {
            (self.text(css).as_deref() == Some(want)).then_some(())
        });
    }

    fn screenshot(&self, dir: &Path, name: &str) {
        let encoded = self.session_call("GET", "/screenshot", None);
        let png = base64ct::Base64::decode_vec(encoded.as_str().expect("base64 PNG"))
            .expect("the screenshot decodes");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
    }

    /// The browser's console log since the last call.
    fn console_log(&self) -> Vec<Value> {
        let log = self.session_call("POST", "/se/log", Some(json!({ "type": "browser" })));
        log.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http::request(self.driver.addr, "DELETE", &path, &[], None, WAIT);
        }
    }
}

/// Panics, saying what to install, unless the browser is installed: the test's first line, so
/// that running it where it cannot run is a failure, never a pass.
fn require_browser() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "this test cannot run here: {} missing; install Debian's browser with \
         `apt-get install chromium chromium-driver` as root (tests/run-all.sh does it)",
        missing.join(" and ")
    );
}

/// `target/test-artifacts/console`, created.
fn artifacts() -> PathBuf {
    let target = bins()
        .lockd
        .ancestors()
        .nth(2)
        .expect("the target directory")
        .to_path_buf();
    let dir = target.join("test-artifacts").join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The depth cell of the queue's row in the destinations table.
fn depth_cell() -> String {
    format!("#destinations tr[data-name=\"{QUEUE}\"] td.depth")
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (tests/run-all.sh installs them as root)"]
fn the_console_logs_in_sends_browses_and_purges_in_a_real_browser() {
    require_browser();
    let mut cluster = Cluster::new(1, "");
    cluster.with_http_pages(USERS);
    let consoles: Vec<_> = cluster.nodes.iter().map(|n| n.console.unwrap()).collect();
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let console = consoles[active];
    let base = format!("http://{console}");

    // Without a session: the pages send to the login, the API refuses, a user outside the
    // console group cannot log in.
    let answer = http::get(console, "/api/overview").unwrap();
    assert_eq!(answer.status, 401, "{answer:?}");
    let form = "user=app&password=password";
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let answer = http::request(console, "POST", "/login", &headers, Some(form), WAIT).unwrap();
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer.body.contains("not in the console group"),
        "{answer:?}"
    );

    let dir = artifacts();
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::start(profile.path());
    browser.open(&base);
    browser.find("#user");
    browser.screenshot(&dir, "01-login");
    browser.type_into("#user", "admin");
    browser.type_into("#password", "password");
    browser.click("#login");
    browser.wait_for_text("#active-node", &cluster.nodes[active].name);
    wait_until("the cluster table to show the active node", || {
        let nodes = browser.text("#nodes tbody")?;
        (nodes.contains(&cluster.nodes[active].name) && nodes.contains("active")).then_some(())
    });
    browser.screenshot(&dir, "02-dashboard");

    browser.type_into("#send-destination", QUEUE);
    browser.type_into("#send-body", BODY);
    browser.click("#send-button");
    browser.wait_for_text("#send-result", &format!("sent to {QUEUE}"));
    browser.wait_for_text(&depth_cell(), "1");
    browser.screenshot(&dir, "03-sent");

    browser.click(&format!(
        "#destinations tr[data-name=\"{QUEUE}\"] button.browse"
    ));
    browser.wait_for_text("#messages tbody td.body", BODY);
    assert_eq!(
        browser.eval("return document.querySelector('#messages b') === null;"),
        true,
        "the body's markup was rendered as markup"
    );
    browser.screenshot(&dir, "04-browsed");

    let purge = format!("#destinations tr[data-name=\"{QUEUE}\"] button.purge");
    browser.click(&purge);
    browser.wait_for_text(&purge, "Confirm purge");
    browser.click(&purge);
    browser.wait_for_text(&depth_cell(), "0");
    browser.wait_for_text("#browse-note", "no messages waiting");
    browser.screenshot(&dir, "05-purged");

    let log = browser.console_log();
    println!("browser console: {log:?}");
    let errors: Vec<&Value> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "the browser logged errors: {errors:?}");
    println!("screenshots in {}", dir.display());
}
