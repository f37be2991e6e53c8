//! The metrics: the `--metrics-addr` HTTP endpoint scraped and parsed while a real mount
//! uploads, the Prometheus names (units, `_total`), the gauges, the `status` label of a
//! request that got no answer, loopback only, and the option from the settings file,
//! the environment and `-o`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::process::Command;

use common::*;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: the TYPE of each family and every sample.
#[derive(Debug)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

/// Parses the Prometheus / OpenMetrics text format (what this endpoint writes of it):
/// `# HELP`, `# TYPE`, `# UNIT`, `# EOF`, and `name{k="v",...} value` with escapes.
fn parse(text: &str) -> Scrape {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    for line in lines {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("not a sample: {line}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                let Some((i, c)) = chars.next() else {
                    panic!("unterminated labels: {line}")
                };
                if c == '}' {
                    end = i;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|x| x.1) {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => panic!("{line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
            rest = &body[end + 1..];
        }
        let value: f64 = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value: {line}"))
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Scrape {
        types,
        samples,
        text: text.to_string(),
    }
}

impl Scrape {
    /// The value of the sample `name` whose labels include `want`; panics if none.
    fn get(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.find(name, want)
            .unwrap_or_else(|| panic!("no {name} {want:?} in:\n{}", self.text))
    }

    fn find(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    fn with_name(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// GETs the metrics over HTTP; checks the status and the content type.
fn scrape(server: &Server, url: &str) -> Scrape {
    let (status, ctype, body) = server.rt.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert!(
        ctype.starts_with("application/openmetrics-text"),
        "content type {ctype}"
    );
    parse(&body)
}

fn metrics_url(m: &Mount) -> String {
    let st = ctl_json(m, &["status"]);
    let url = st["metrics_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics_url in status: {st}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    url
}

#[test]
fn the_endpoint_is_scraped_and_counts_a_real_upload_with_prometheus_names() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    // Set in the settings file, as a user keeps it.
    let conf = base.path().join("davdrive.toml");
    fs::write(&conf, "metrics_addr = \"127.0.0.1:0\"\n").unwrap();
    let m = Mount::start(
        &server.url(),
        base.path(),
        &["--config", conf.to_str().unwrap()],
    );
    let url = metrics_url(&m);

    let before = scrape(&server, &url);
    // Names: units in them, `_total` on every counter, all under davdrive_.
    for s in &before.samples {
        assert!(s.name.starts_with("davdrive_"), "{}", s.name);
    }
    for (family, kind) in &before.types {
        if kind == "counter" {
            assert!(
                before
                    .samples
                    .iter()
                    .filter(|s| s.name.starts_with(family.as_str()))
                    .all(|s| s.name == format!("{family}_total")),
                "counter {family} has a sample not named {family}_total:\n{}",
                before.text
            );
        }
    }
    for gone in [
        "davdrive_bytes_uploaded_total",
        "davdrive_bytes_downloaded_total",
        "davdrive_request_seconds_bucket",
    ] {
        assert!(before.with_name(gone).is_empty(), "{gone} still there");
    }
    assert_eq!(
        before
            .types
            .get("davdrive_uploaded_bytes")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        before
            .types
            .get("davdrive_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let up0 = before.get("davdrive_uploaded_bytes_total", &[]);
    before.get("davdrive_downloaded_bytes_total", &[]);
    assert_eq!(before.get("davdrive_remote_up", &[]), 1.0);
    assert_eq!(
        before.get("davdrive_backup_last_success_timestamp_seconds", &[]),
        0.0,
        "no backup was made"
    );
    assert_eq!(before.get("davdrive_journal_waiting", &[]), 0.0);
    assert_eq!(
        before.get("davdrive_journal_oldest_entry_age_seconds", &[]),
        0.0
    );
    assert_eq!(before.get("davdrive_cache_dirty_bytes", &[]), 0.0);
    // Mounting listed the root: a PROPFIND with its status and its latency by method.
    assert!(
        before.get(
            "davdrive_requests_total",
            &[("method", "PROPFIND"), ("status", "207")]
        ) >= 1.0
    );
    assert!(
        before.get(
            "davdrive_request_duration_seconds_count",
            &[("method", "PROPFIND")]
        ) >= 1.0
    );

    // A real upload through the mount moves the counters.
    let data = pattern(300_000, 7);
    fs::write(m.path("report.bin"), &data).unwrap();
    wait_server_has(&server, "report.bin", &data);
    let after = scrape(&server, &url);
    let up1 = after.get("davdrive_uploaded_bytes_total", &[]);
    assert!(
        up1 - up0 >= data.len() as f64,
        "uploaded went from {up0} to {up1} for {} bytes",
        data.len()
    );
    assert!(
        after.get(
            "davdrive_requests_total",
            &[("method", "PUT"), ("status", "201")]
        ) >= 1.0
    );
    assert!(
        after.get(
            "davdrive_request_duration_seconds_count",
            &[("method", "PUT")]
        ) >= 1.0
    );
    let inf = after.get(
        "davdrive_request_duration_seconds_bucket",
        &[("method", "PUT"), ("le", "+Inf")],
    );
    assert_eq!(
        inf,
        after.get(
            "davdrive_request_duration_seconds_count",
            &[("method", "PUT")]
        )
    );
    assert!(after.get("davdrive_cache_bytes", &[]) >= data.len() as f64);
    assert!(after.get("davdrive_cache_files", &[]) >= 1.0);

    // `ctl metrics` says the same, in the same format.
    let via_ctl = ctl_json(&m, &["metrics"]);
    let via_ctl = parse(via_ctl.as_str().unwrap());
    assert!(via_ctl.get("davdrive_uploaded_bytes_total", &[]) >= up1);
}

#[test]
fn a_request_without_an_answer_is_counted_as_an_error_and_the_gauges_follow_an_outage() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(
        &server.url(),
        base.path(),
        &["--metrics-addr", "127.0.0.1:0", "--request-timeout", "1s"],
    );
    let url = metrics_url(&m);

    // Requests get no answer in time: they time out.
    server
        .proxy
        .set_fault(Fault::Delay(std::time::Duration::from_secs(3)));
    let data = pattern(50_000, 3);
    fs::write(m.path("offline.bin"), &data).unwrap();
    // The health check fails within its interval; the gauges say so.
    let mut last = None;
    wait_until(30, "remote_up 0 and the write waiting", || {
        let s = scrape(&server, &url);
        let done = s.get("davdrive_remote_up", &[]) == 0.0
            && s.get("davdrive_journal_waiting", &[]) >= 1.0;
        last = Some(s);
        done
    });
    let s = last.unwrap();
    assert!(
        s.get("davdrive_cache_dirty_bytes", &[]) >= data.len() as f64,
        "{}",
        s.text
    );
    assert!(s.get("davdrive_journal_oldest_entry_age_seconds", &[]) >= 0.0);
    // A request that got no answer: status="error", never status="0".
    let errors: Vec<_> = s
        .with_name("davdrive_requests_total")
        .into_iter()
        .filter(|x| x.labels["status"] == "error")
        .collect();
    assert!(
        !errors.is_empty(),
        "no status=\"error\" sample:\n{}",
        s.text
    );
    assert!(
        s.with_name("davdrive_requests_total")
            .iter()
            .all(|x| x.labels["status"] != "0"),
        "{}",
        s.text
    );
    let method = &errors[0].labels["method"];
    let by_kind: f64 = s
        .with_name("davdrive_request_errors_total")
        .iter()
        .filter(|x| &x.labels["method"] == method)
        .map(|x| x.value)
        .sum();
    assert_eq!(
        by_kind,
        s.with_name("davdrive_requests_total")
            .iter()
            .filter(|x| &x.labels["method"] == method && x.labels["status"] == "error")
            .map(|x| x.value)
            .sum::<f64>(),
        "{}",
        s.text
    );
    assert!(
        s.get(
            "davdrive_request_errors_total",
            &[("method", method), ("kind", "timeout")]
        ) >= 1.0,
        "{}",
        s.text
    );
    for e in s.with_name("davdrive_request_errors_total") {
        assert!(
            ["timeout", "connect", "other"].contains(&e.labels["kind"].as_str()),
            "{e:?}"
        );
    }

    server.proxy.clear_fault();
    let (ok, out, err) = ctl(&m, &["sync", "--wait"]);
    assert!(ok, "{out}{err}");
    let s = scrape(&server, &url);
    assert_eq!(s.get("davdrive_remote_up", &[]), 1.0);
    assert_eq!(s.get("davdrive_journal_waiting", &[]), 0.0);
    assert_eq!(s.get("davdrive_cache_dirty_bytes", &[]), 0.0);
    assert_eq!(s.get("davdrive_journal_oldest_entry_age_seconds", &[]), 0.0);
}

#[test]
fn other_than_loopback_is_refused_unless_allowed() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    for (how, args, env) in [
        ("flag", vec!["--metrics-addr", "0.0.0.0:0"], None),
        ("environment", vec![], Some("0.0.0.0:0")),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.arg("mount")
            .arg("http://127.0.0.1:9/")
            .arg(&mnt)
            .arg("--cache-dir")
            .arg(base.path().join("cache"))
            .args(&args);
        if let Some(v) = env {
            cmd.env("DAVDRIVE_METRICS_ADDR", v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{how}: mounted");
        assert!(
            err.contains("not a loopback address") && err.contains("--metrics-allow-remote"),
            "{how}: {err}"
        );
        assert!(!is_mounted(&std::fs::canonicalize(&mnt).unwrap()));
    }
}

#[test]
fn the_option_comes_from_the_environment_the_file_and_mount_options() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let print = |env: &[(&str, &str)], extra: &[&str]| {
        let out = Command::new(BIN)
            .arg("mount")
            .arg("http://127.0.0.1:9/")
            .arg(&mnt)
            .args(extra)
            .arg("--print-config")
            .envs(env.iter().copied())
            .env_remove("DAVDRIVE_CONFIG")
            .env("HOME", base.path())
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("metrics_addr"))
            .unwrap_or_else(|| panic!("no metrics_addr in:\n{text}"))
            .to_string()
    };
    let line = print(&[("DAVDRIVE_METRICS_ADDR", "127.0.0.1:9184")], &[]);
    assert!(
        line.contains("127.0.0.1:9184") && line.contains("DAVDRIVE_METRICS_ADDR"),
        "{line}"
    );
    let conf = base.path().join("c.toml");
    fs::write(&conf, "metrics_addr = \"127.0.0.1:9185\"\n").unwrap();
    let line = print(&[], &["--config", conf.to_str().unwrap()]);
    assert!(
        line.contains("127.0.0.1:9185") && line.contains("file"),
        "{line}"
    );
    // The flag wins over both.
    let line = print(
        &[("DAVDRIVE_METRICS_ADDR", "127.0.0.1:9184")],
        &[
            "--config",
            conf.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:9186",
        ],
    );
    assert!(line.contains("127.0.0.1:9186"), "{line}");

    // mount -t davdrive ... -o metrics_addr=...
    let call = davdrive::mount_helper::parse(
        [
            "http://127.0.0.1:9/",
            mnt.to_str().unwrap(),
            "-o",
            "metrics_addr=127.0.0.1:9184,metrics_allow_remote",
        ]
        .map(OsString::from),
    )
    .unwrap();
    let args: Vec<String> = call
        .mount_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        args.iter().any(|a| a == "--metrics-addr=127.0.0.1:9184"),
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a == "--metrics-allow-remote"),
        "{args:?}"
    );
}
