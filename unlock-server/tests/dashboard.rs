//! The operator dashboard against a running server with real machines on swtpm: one that
//! unlocked, one refused by its policy (a PCR changed after enrollment), one locked out by
//! the failed-attempt limit, one revoked, a stranger throttled, and a hostile refusal reason
//! written into the attempt log. The page is fetched with ureq (content, escaping, who may
//! see it) and then loaded in a real headless Chromium (DOM, no script, no console error, a
//! screenshot kept under target/).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use support::{code, Driver, Machine, Server};
use unlock_server::dashboard::{esc, TOKEN_FILE};
use unlock_server::role::MAX_CONSECUTIVE_FAILURES;
use verifier_core::keysplit::NkPrivate;

const TOFU: &[&str] = &["--allow-ek-without-cert"];

/// What the attempt log of an agent can carry that must never become markup.
const HOSTILE: &str = "<script>alert('owned')</script><img src=x onerror=alert(1)>";

struct Fleet {
    server: Server,
    unlocked: String,
    refused: String,
    locked: String,
    revoked: String,
    /// Requests from the stranger's address refused by the throttle.
    throttled: u64,
    /// Kept alive: their swtpms.
    _machines: Vec<Machine>,
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn extend_pcr7(m: &Machine) {
    let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
    tpm.extend(
        7,
        &[verifier_core::wire::HashAlg::Sha256.hash(b"other bootloader")],
    )
    .unwrap();
}

fn fleet() -> Fleet {
    let server = Server::start(TOFU);

    // Unlocks with the real agent; pinned to the named policy `fleet` v1, which then gets
    // a v2 the machine is not moved to.
    let a = Machine::new();
    let (ek, unlocked) = a.export_ek(&server);
    let file = |name: &str, text: &[u8]| {
        let p = a.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let v1 = file("v1.json", a.policy_now(false).as_bytes());
    let v2 = file(
        "v2.json",
        a.policy_now(false)
            .replacen(
                "\"allowed\":[",
                &format!("\"allowed\":[\"{}\",", "7c".repeat(32)),
                1,
            )
            .as_bytes(),
    );
    let payload = b"the disk key of machine a".to_vec();
    let pf = file("payload", &payload);
    for args in [
        vec!["policy", "create", "fleet", "--file", &v1],
        vec![
            "enroll",
            "--ek-pub",
            ek.to_str().unwrap(),
            "--payload",
            &pf,
            "--policy-name",
            "fleet",
        ],
    ] {
        let out = server.unlockctl(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = a.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(a.key_file()).unwrap(), payload);
    let out = server.unlockctl(&["policy", "update", "fleet", "--file", &v2]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Refused by its policy: the boot loader (PCR 7) changed after enrollment.
    let b = Machine::new();
    let (refused, _) = b.enroll(&server, &b.policy_now(true), &[]);
    extend_pcr7(&b);
    let out = b.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("policy_denied"), "{}", stderr(&out));

    // Locked out: genuine quotes that fail its policy, until the limit refuses it.
    let c = Machine::new();
    let (locked, _) = c.enroll(&server, &c.policy_now(false), &[]);
    extend_pcr7(&c);
    let mut d = Driver::new(&c, &server);
    let nk = NkPrivate::generate().unwrap();
    let mut codes = Vec::new();
    for _ in 0..=MAX_CONSECUTIVE_FAILURES {
        let ch = d.challenge("verifier");
        let req = d.attest_requests(&[&ch], &nk, None).remove(0);
        let (st, body) = d.attest("verifier", &req);
        assert_ne!(st, 200);
        codes.push(code(&body));
    }
    d.release();
    let limit = usize::try_from(MAX_CONSECUTIVE_FAILURES).unwrap();
    assert!(
        codes[..limit].iter().all(|c| c == "policy_denied"),
        "{codes:?}"
    );
    assert_eq!(codes[limit], "rate_limited", "{codes:?}");

    // Revoked by an operator.
    let e = Machine::new();
    let (revoked, _) = e.enroll(&server, &e.policy_now(false), &[]);
    let out = server.unlockctl(&["revoke", &revoked]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A stranger (127.0.0.2) sending bodies that do not decode, until it is throttled.
    let raw = support::raw::Raw::new(&server);
    let mut throttled = 0;
    for _ in 0..40 {
        let (st, _) = raw.post_from(
            support::raw::stranger(),
            "/verifier/v1/register",
            b"not json",
        );
        assert!(st == 400 || st == 429, "{st}");
        throttled += u64::from(st == 429);
    }
    assert!(throttled > 0, "the stranger was never throttled");

    // A refusal reason with markup in it, as a row of the attempt log.
    let db = rusqlite::Connection::open(server.state().join("verifier.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute(
        "INSERT INTO attempts (agent_id, challenge_id, at, result, reason, evidence_failure)
         VALUES (?1, NULL, ?2, 'refused', ?3, 0)",
        rusqlite::params![refused, unlock_server::role::unix_now(), HOSTILE],
    )
    .unwrap();

    Fleet {
        server,
        unlocked,
        refused,
        locked,
        revoked,
        throttled,
        _machines: vec![a, b, c, e],
    }
}

fn read_token(server: &Server) -> String {
    std::fs::read_to_string(server.state().join(TOKEN_FILE))
        .unwrap()
        .trim()
        .to_owned()
}

fn admin_token(server: &Server) -> String {
    std::fs::read_to_string(server.token_file())
        .unwrap()
        .trim()
        .to_owned()
}

fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("operator:{password}"))
    )
}

/// GET `path` with an optional Authorization header: status, WWW-Authenticate, body.
fn get(server: &Server, path: &str, auth: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = server.http().get(format!("{}{path}", server.url));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        challenge,
        resp.into_body().read_to_string().unwrap(),
    )
}

/// The `<tr>` of one machine in one role's section.
fn machine_row<'a>(page: &'a str, role: &str, agent_id: &str) -> &'a str {
    let section = &page[page
        .find(&format!("<section id=\"role-{role}\""))
        .unwrap_or_else(|| panic!("no {role} section"))..];
    let section = &section[..section.find("</section>").unwrap()];
    let start = section
        .find(&format!("<tr data-agent=\"{agent_id}\""))
        .unwrap_or_else(|| panic!("{agent_id} not listed in {role}: {section}"));
    let row = &section[start..];
    &row[..row.find("</tr>").unwrap()]
}

/// The reasons of the refusals of `agent_id` as the admin API gives them.
fn reasons(server: &Server, agent_id: &str, role: &str) -> Vec<String> {
    server.status(agent_id)[role]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["released"] == false)
        .map(|a| a["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// Releases and refusals in the attempt log, as the chart must count them.
fn logged(server: &Server, role: &str) -> (i64, i64) {
    let db = rusqlite::Connection::open(server.state().join(format!("{role}.db"))).unwrap();
    db.query_row(
        "SELECT SUM(result = 'released'), SUM(result != 'released') FROM attempts",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// How a browser serializes text content (`--dump-dom`): only `&`, `<`, `>` and the
/// no-break space are escaped.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// Checks the page as served (`escape` = the server's [`esc`]) or as the browser's DOM
/// (`escape` = [`dom_text`]).
fn check_page(f: &Fleet, page: &str, escape: fn(&str) -> String) {
    // Nothing that came from the database became markup.
    assert!(!page.contains("<script"), "a script element on the page");
    assert!(!page.contains("<img"), "an element from the attempt log");
    assert!(
        page.contains(&escape(HOSTILE)),
        "the hostile reason, escaped"
    );

    let s = &f.server;
    let row = machine_row(page, "verifier", &f.unlocked);
    assert!(row.contains("data-state=\"released\""), "{row}");
    assert!(row.contains("released this boot"), "{row}");
    // One release per boot (the default): that boot is TERMINATED.
    assert!(row.contains("boot TERMINATED"), "{row}");
    // Its policy version, and the newer one it is not on.
    assert!(row.contains("<code>fleet</code> v1"), "{row}");
    assert!(row.contains("(v2 available)"), "{row}");
    let policies = &page[page.find("<table class=\"policies\">").unwrap()..];
    let policies = &policies[policies.find("<tbody>").unwrap()..];
    let fleet = &policies[..policies.find("</tr>").unwrap()];
    assert!(
        fleet.contains("<code>fleet</code></td><td>v2</td>"),
        "{fleet}"
    );
    assert!(
        fleet.ends_with("<td>1</td><td>1</td>"),
        "1 machine, 1 behind: {fleet}"
    );

    let row = machine_row(page, "verifier", &f.refused);
    assert!(row.contains("data-state=\"refused\""), "{row}");
    assert!(row.contains("last attestation refused"), "{row}");
    let policy = reasons(s, &f.refused, "verifier")
        .into_iter()
        .find(|r| r != HOSTILE)
        .expect("the policy refusal is in the admin API");
    assert!(policy.contains("pcr sha256:7"), "{policy}");
    assert!(
        row.contains(&escape(&policy)),
        "the failed rule in words: {row}"
    );

    let row = machine_row(page, "verifier", &f.locked);
    assert!(row.contains("data-state=\"locked-out\""), "{row}");
    assert!(row.contains("locked out"), "{row}");
    // The tenant never saw its quotes: not locked out there.
    let row = machine_row(page, "tenant", &f.locked);
    assert!(!row.contains("locked-out"), "{row}");

    for role in ["verifier", "tenant"] {
        let row = machine_row(page, role, &f.revoked);
        assert!(row.contains("data-state=\"revoked\""), "{row}");
    }

    // The chart counts what the attempt log holds (all of it is from the last minutes).
    for role in ["verifier", "tenant"] {
        let (released, refused) = logged(s, role);
        assert!(
            page.contains(&format!(
                "aria-label=\"{role}: {released} released and {refused} refused in the last 24 hours\""
            )),
            "{role}: chart of {released}/{refused} missing"
        );
    }
    let (released, refused) = logged(s, "verifier");
    assert_eq!(released, 1);
    assert!(refused > i64::from(MAX_CONSECUTIVE_FAILURES));
    assert!(page.contains("<rect class=\"released\""));
    assert!(page.contains("<rect class=\"refused\""));

    // The live limits, with this very connection open.
    let open = page
        .split("<div id=\"open-connections\"><b>")
        .nth(1)
        .and_then(|r| r.split(" / ").next())
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(open >= 1, "open connections: {open}");
    let figure = |id: &str| {
        page.split(&format!("<div id=\"{id}\"><b>"))
            .nth(1)
            .and_then(|r| r.split("</b>").next())
            .unwrap_or_else(|| panic!("no {id}"))
            .to_owned()
    };
    let total: u64 = figure("throttled-total").parse().unwrap();
    assert!(total >= f.throttled, "throttled {total} < {}", f.throttled);
    let remembered: u64 = figure("throttled-sources")
        .split(" / ")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(remembered >= 1, "the stranger's address is remembered");
    // No secret: neither token, nor the payload's ciphertext column's name.
    assert!(!page.contains(&admin_token(s)));
    assert!(!page.contains(&read_token(s)));
}

#[test]
fn dashboard_shows_the_fleet_escaped_and_only_to_token_holders() {
    let f = fleet();
    let s = &f.server;
    let admin = admin_token(s);
    let read = read_token(s);
    assert_ne!(admin, read);

    // Refused: nothing, a wrong token, tokens in the query string, the admin token by Basic.
    let wrong_bearer = format!("Bearer {}", "0".repeat(64));
    let wrong_basic = basic(&"0".repeat(64));
    let admin_basic = basic(&admin);
    let not_accepted: [(String, Option<&str>); 6] = [
        ("/dashboard".into(), None),
        ("/dashboard".into(), Some(wrong_bearer.as_str())),
        ("/dashboard".into(), Some(wrong_basic.as_str())),
        ("/dashboard".into(), Some(admin_basic.as_str())),
        (format!("/dashboard?token={admin}"), None),
        (format!("/dashboard?token={read}"), None),
    ];
    for (path, auth) in &not_accepted {
        let (st, challenge, body) = get(s, path, *auth);
        assert_eq!(st, 401, "{path} {auth:?}: {body}");
        assert!(
            challenge.unwrap().starts_with("Basic realm="),
            "the browser is asked for the password"
        );
        assert!(!body.contains(&f.unlocked), "{body}");
    }

    // Accepted: the admin token as a bearer, the read-only one as a bearer or by Basic.
    let mut pages = Vec::new();
    for auth in [
        format!("Bearer {admin}"),
        format!("Bearer {read}"),
        basic(&read),
    ] {
        let (st, _, page) = get(s, "/dashboard", Some(&auth));
        assert_eq!(st, 200, "{page}");
        check_page(&f, &page, esc);
        pages.push(page);
    }

    // Even text that got past the escaping could not run: no script source is allowed, and
    // no copy is kept by a cache.
    let resp = s
        .http()
        .get(format!("{}/dashboard", s.url))
        .header("authorization", &format!("Bearer {read}"))
        .call()
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let csp = header("content-security-policy");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("content-type"), "text/html; charset=utf-8");

    // What a stranger costs: a refusal takes about what `/healthz` takes (the check comes
    // before any read); the figures are printed (timing is not asserted: shared CI cores).
    let http = s.http();
    let time = |path: &str, auth: Option<&str>, n: u32| {
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut req = http.get(format!("{}{path}", s.url));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.call().unwrap();
            let _ = resp.into_body().read_to_vec().unwrap();
        }
        started.elapsed() / n
    };
    let healthz = time("/healthz", None, 200);
    let refused = time("/dashboard", Some(&wrong_bearer), 200);
    let page = time("/dashboard", Some(&format!("Bearer {read}")), 50);
    eprintln!(
        "per request: /healthz {healthz:?}, /dashboard refused {refused:?} ({:.2}x healthz), \
         /dashboard page (4 machines, 2 roles) {page:?} ({:.2}x healthz)",
        refused.as_secs_f64() / healthz.as_secs_f64(),
        page.as_secs_f64() / healthz.as_secs_f64()
    );

    // The read-only token opens nothing else.
    let (st, _, _) = get(
        s,
        "/verifier/admin/v1/enrollments",
        Some(&format!("Bearer {read}")),
    );
    assert_eq!(st, 401);
}

/// Debian's Chromium; a missing browser fails the test (CI installs it) unless
/// `UNLOCK_SKIP_BROWSER=1` says to skip.
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = PathBuf::from(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if std::env::var("UNLOCK_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("UNLOCK_SKIP_BROWSER=1: the browser test is skipped");
        return None;
    }
    panic!(
        "chromium not found in PATH: install Debian's chromium (scripts/install-deps.sh does), \
         or set UNLOCK_SKIP_BROWSER=1 to skip this test knowingly"
    );
}

/// Runs headless Chromium on `url` with `args`; its stdout and stderr.
fn browse(chromium: &PathBuf, url: &str, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            // The test server's certificate is self-signed and generated per run.
            "--ignore-certificate-errors",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "chromium failed: {stderr}");
    (stdout, stderr)
}

/// What Chromium's stderr log (`--enable-logging=stderr`) shows for console messages
/// (`INFO:CONSOLE:1] "..."`; older builds wrote `CONSOLE(1)`), uncaught errors and refused
/// loads.
const CONSOLE_MARKS: [&str; 5] = [":CONSOLE", "CONSOLE(", "Uncaught", "Refused to", "ERR_"];

#[test]
fn dashboard_in_a_real_headless_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let f = fleet();
    let s = &f.server;
    // The read-only token as Basic credentials in the URL: what a browser sends after asking.
    let url = format!("https://operator:{}@{}/dashboard", read_token(s), s.addr());

    let (dom, log) = browse(&chromium, &url, &["--dump-dom"]);
    assert!(dom.contains("unlock-server dashboard"), "{dom}\n{log}");
    check_page(&f, &dom, dom_text);
    // No script at all, so nothing to fail; and the browser reported no console error, nor
    // a refused load (CSP, mixed content).
    assert!(!dom.to_ascii_lowercase().contains("<script"));
    for bad in CONSOLE_MARKS {
        assert!(!log.contains(bad), "browser log has {bad:?}:\n{log}");
    }
    // The detector is not blind: a page that does log an error is caught by it.
    let (_, noisy) = browse(
        &chromium,
        "data:text/html,<p>x</p><script>console.error('boom');undefinedFn()</script>",
        &["--dump-dom"],
    );
    assert!(
        CONSOLE_MARKS.iter().any(|m| noisy.contains(m)) && noisy.contains("Uncaught"),
        "this Chromium does not log console errors to stderr; the check above would be blind:\n{noisy}"
    );

    // Without the token the browser gets no page.
    let bare = format!("https://{}/dashboard", s.addr());
    let (dom, _) = browse(&chromium, &bare, &["--dump-dom"]);
    assert!(!dom.contains(&f.unlocked), "{dom}");
    assert!(!dom.contains("data-state"), "{dom}");

    // The screenshot, kept under target/ (a CI artifact).
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &chromium,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
    );
    // And the whole page, taller (the README's picture, docs/dashboard.png).
    let full = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-full.png");
    let _ = std::fs::remove_file(&full);
    browse(
        &chromium,
        &url,
        &[
            &format!("--screenshot={}", full.display()),
            "--window-size=1280,1500",
            "--hide-scrollbars",
        ],
    );
    for p in [&shot, &full] {
        let png = std::fs::read(p).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(
            png.len() > 10_000,
            "a blank screenshot? {} bytes",
            png.len()
        );
        eprintln!("screenshot: {}", p.display());
    }
}
