//! The connector's HTTP server as an exposed service: authentication, TLS with client
//! certificates (tried with a real Prometheus, promtool and an HTTP client), slow and idle
//! clients, and the limits on what one request may read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use promscale_connector::prompb::{LabelMatcher, MatchType, Query, ReadRequest, ResponseType};
use promscale_e2e::certs::TestCertificates;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::{sum_metric, Prometheus};
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::wait_for;
use prost::Message;

fn https_client(certs: &TestCertificates, identity: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(certs.ca());
    if let Some(name) = identity {
        builder = builder.identity(certs.identity(name));
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_tls_with_a_real_prometheus_promtool_and_client_certificates() {
    let certs = TestCertificates::generate();
    let secrets = promscale_e2e::private_dir("promscale-test-secrets-");
    let write_password = secrets.path().join("write-password");
    let read_token = secrets.path().join("read-token");
    let wrong_password = secrets.path().join("wrong-password");
    std::fs::write(&write_password, "w-s3cret-do-not-log\n").unwrap();
    std::fs::write(&read_token, "r-t0ken-do-not-log").unwrap();
    std::fs::write(&wrong_password, "guess").unwrap();

    let pg = TestPostgres::start();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (cert, key, ca) = (
        path(&certs.path("server.crt")),
        path(&certs.path("server.key")),
        path(&certs.path("ca.crt")),
    );
    let (wp, rt) = (path(&write_password), path(&read_token));
    let connector = Connector::spawn(
        Some(&pg.uri()),
        &[
            "--auth.write.basic-username=prometheus",
            &format!("--auth.write.basic-password-file={wp}"),
            &format!("--auth.read.bearer-token-file={rt}"),
            &format!("--auth.tls-cert-file={cert}"),
            &format!("--auth.tls-key-file={key}"),
            &format!("--auth.tls-client-ca-file={ca}"),
        ],
    );
    let base = format!("https://127.0.0.1:{}", connector.port());
    let client = https_client(&certs, Some("client"));
    wait_for("the connector to be ready over HTTPS", Duration::from_secs(60), || {
        let request = client.get(format!("{base}/readyz")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;

    // Health checks need neither credentials nor a client certificate (kubelet sends none).
    let anonymous = https_client(&certs, None);
    let health = anonymous.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // Plain HTTP gets no answer: the port speaks TLS only.
    assert!(reqwest::get(connector.url("/healthz")).await.is_err());
    // Without a client certificate, nothing else.
    let refused = anonymous
        .get(format!("{base}/api/v1/labels"))
        .bearer_auth("r-t0ken-do-not-log")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // A certificate from another CA fails the handshake.
    let stranger = https_client(&certs, Some("stranger"));
    assert!(stranger.get(format!("{base}/healthz")).send().await.is_err());

    // Credentials are scoped: the read token does not write, the write password does not read.
    let body = encode(vec![series(&[("__name__", "auth_probe")], &[(recent_ms(), 1.0)])]);
    let write = |auth: Option<(&str, &str)>, bearer: Option<&str>| {
        let mut request = client
            .post(format!("{base}/write"))
            .header("Content-Encoding", "snappy")
            .body(body.clone());
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(write(None, None).await.unwrap().status(), 401);
    assert_eq!(write(None, Some("r-t0ken-do-not-log")).await.unwrap().status(), 401);
    assert_eq!(write(Some(("prometheus", "guess")), None).await.unwrap().status(), 401);
    assert_eq!(
        write(Some(("someone", "w-s3cret-do-not-log")), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        write(Some(("prometheus", "w-s3cret-do-not-log")), None)
            .await
            .unwrap()
            .status(),
        204
    );
    let read = |bearer: Option<&str>, basic_pw: Option<&str>| {
        let mut request = client.get(format!("{base}/api/v1/label/__name__/values"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(pw) = basic_pw {
            request = request.basic_auth("prometheus", Some(pw));
        }
        request.send()
    };
    assert_eq!(read(None, None).await.unwrap().status(), 401);
    assert_eq!(read(None, Some("w-s3cret-do-not-log")).await.unwrap().status(), 401);
    assert_eq!(read(Some("r-t0ken-do-not-log"), None).await.unwrap().status(), 200);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 401, "/metrics is a read endpoint");

    // A real Prometheus: remote write with basic auth and a client certificate, remote read
    // with the bearer token; a second remote write with a wrong password fails.
    let prometheus_config = {
        let (client_crt, client_key) = (path(&certs.path("client.crt")), path(&certs.path("client.key")));
        let wrong = path(&wrong_password);
        let port = connector.port();
        let (wp, rt, ca) = (wp.clone(), rt.clone(), ca.clone());
        move |own_port: u16| {
            format!(
                "global: {{scrape_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: self\n    static_configs: [{{targets: ['127.0.0.1:{own_port}']}}]\n\
                 remote_write:\n\
                 \x20 - url: https://127.0.0.1:{port}/write\n    name: good\n\
                 \x20   basic_auth: {{username: prometheus, password_file: {wp}}}\n\
                 \x20   tls_config: {{ca_file: {ca}, cert_file: {client_crt}, key_file: {client_key}}}\n\
                 \x20   queue_config: {{batch_send_deadline: 1s}}\n\
                 \x20 - url: https://127.0.0.1:{port}/write\n    name: wrong\n\
                 \x20   basic_auth: {{username: prometheus, password_file: {wrong}}}\n\
                 \x20   tls_config: {{ca_file: {ca}, cert_file: {client_crt}, key_file: {client_key}}}\n\
                 \x20   queue_config: {{batch_send_deadline: 1s}}\n\
                 remote_read:\n\
                 \x20 - url: https://127.0.0.1:{port}/read\n    name: reader\n    read_recent: true\n\
                 \x20   authorization: {{credentials_file: {rt}}}\n\
                 \x20   tls_config: {{ca_file: {ca}, cert_file: {client_crt}, key_file: {client_key}}}\n"
            )
        }
    };
    let prometheus = Prometheus::start(prometheus_config, &[]).await;
    // Prometheus' own `up` arrives through the authenticated, encrypted remote write.
    wait_for("Prometheus' samples in the connector", Duration::from_secs(60), || {
        let request = client
            .get(format!("{base}/api/v1/query"))
            .bearer_auth("r-t0ken-do-not-log")
            .query(&[("query", "count(up{job=\"self\"})")])
            .send();
        async move {
            let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
            (!body["data"]["result"].as_array()?.is_empty()).then_some(())
        }
    })
    .await;
    // The wrong password is refused (401) and Prometheus counts the samples as failed.
    wait_for("Prometheus to report failed samples", Duration::from_secs(60), || {
        let metrics = reqwest::get(prometheus.url("/metrics"));
        async move {
            let text = metrics.await.ok()?.text().await.ok()?;
            let failed = text
                .lines()
                .filter(|l| {
                    l.starts_with("prometheus_remote_storage_samples_failed_total")
                        && l.contains("remote_name=\"wrong\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            (failed > 0.0).then_some(())
        }
    })
    .await;
    // Remote read through Prometheus: a series only the connector has.
    wait_for("remote read through Prometheus", Duration::from_secs(30), || {
        let query = prometheus.query("auth_probe", recent_ms() as f64 / 1000.0);
        async move {
            let result = query.await;
            (!result.as_array()?.is_empty()).then_some(())
        }
    })
    .await;

    // promtool (2.42 has no HTTP config file) against a second connector on the same
    // database with TLS and basic auth but no client CA: the CA through SSL_CERT_FILE, the
    // credentials in the URL, as Go clients take them.
    let common_password = secrets.path().join("common-password");
    std::fs::write(&common_password, "c-pw-do-not-log").unwrap();
    let second = Connector::spawn(
        Some(&pg.uri()),
        &[
            "--auth.basic-username=admin",
            &format!("--auth.basic-password-file={}", path(&common_password)),
            &format!("--auth.tls-cert-file={cert}"),
            &format!("--auth.tls-key-file={key}"),
        ],
    );
    let second_base = format!("https://127.0.0.1:{}", second.port());
    wait_for("the second connector", Duration::from_secs(60), || {
        let request = anonymous.get(format!("{second_base}/readyz")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    let promtool = |password: &str| {
        std::process::Command::new("promtool")
            .args(["query", "instant"])
            .arg(format!("https://admin:{password}@127.0.0.1:{}", second.port()))
            .arg("count(up{job=\"self\"})")
            .env("SSL_CERT_FILE", &ca)
            .output()
            .expect("running promtool")
    };
    let answer = promtool("c-pw-do-not-log");
    assert!(
        answer.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert!(String::from_utf8_lossy(&answer.stdout).contains("=> 1"), "{answer:?}");
    let refused = promtool("wrong");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
    assert!(!second.log().contains("c-pw-do-not-log"));

    // A rotated token takes effect without a restart.
    std::fs::write(&read_token, "rotated-token").unwrap();
    wait_for("the rotated token", Duration::from_secs(10), || {
        let request = read(Some("rotated-token"), None);
        async move { (request.await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    assert_eq!(read(Some("r-t0ken-do-not-log"), None).await.unwrap().status(), 401);

    // No secret reaches the log.
    drop(prometheus);
    let log = connector.log();
    for secret in ["w-s3cret-do-not-log", "r-t0ken-do-not-log", "rotated-token", "guess"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("not authenticated"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_configured_auth_flag_stops_the_connector_with_a_clear_message() {
    let pg = TestPostgres::start();
    let mut connector = Connector::spawn(Some(&pg.uri()), &["--auth.basic-username=prometheus"]);
    wait_for("the connector to say why it stops", Duration::from_secs(30), || {
        let log = connector.log();
        async move { log.contains("--auth.basic-password-file").then_some(()) }
    })
    .await;
    let status = connector.stop().expect("the connector ran");
    assert!(!status.success(), "{status:?}");
    assert!(
        reqwest::get(connector.url("/healthz")).await.is_err(),
        "nothing listens"
    );
}

/// Opens a connection and sends half a request header.
fn half_open(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"POST /write HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream
}

fn open_files(connector: &Connector) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", connector.pid().unwrap()))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_connections_limited() {
    let pg = TestPostgres::start();
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--web.read-header-timeout=2s",
            "--web.read-timeout=2s",
            "--web.max-connections=64",
        ],
    )
    .await;
    let port = connector.port();
    let files_before = open_files(&connector);

    // 300 connections that send half a header and wait: the connector holds at most 64 of
    // them at a time, closes each after the header timeout, and keeps answering.
    let sockets: Vec<TcpStream> = (0..300).map(|_| half_open(port)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        open_files(&connector) <= files_before + 64 + 8,
        "open files: {} (before: {files_before})",
        open_files(&connector)
    );
    // /healthz answers once slots free up: within a few header timeouts, not never.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let health = client.get(connector.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    // The first of the half-open connections have been closed by the server.
    let mut first = sockets.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    let read = first.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err() || buf.starts_with(b"HTTP/1.1 408"),
        "{read:?}"
    );

    // A body that never finishes: after the read timeout, 503 on write (Prometheus retries
    // it) and 408 elsewhere; the connector stays healthy.
    for (path, status) in [("/write", "503"), ("/api/v1/query", "408")] {
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b").as_bytes())
            .unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {answer:?}");
        assert!(answer.contains("--web.read-timeout"), "{answer:?}");
    }

    // Clients that pipeline requests and never read the answers: each connection is closed
    // once its responses have waited the read timeout for the client to take them.
    let baseline = open_files(&connector);
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100_000);
    let hoarders: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = stream.write_all(&request);
            stream
        })
        .collect();
    wait_for("the stalled connections to be closed", Duration::from_secs(30), || {
        let open = open_files(&connector);
        async move { (open <= baseline + 2).then_some(()) }
    })
    .await;
    drop(hoarders);

    // Health checks take no body: anybody could otherwise make the server buffer one.
    let mut probe = TcpStream::connect(("127.0.0.1", port)).unwrap();
    probe
        .write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\nxxxx")
        .unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = String::new();
    let _ = probe.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 405"),
        "{answer:?}"
    );

    // A body above the size limit is refused before it is read whole.
    let huge = vec![b'x'; (64 << 20) + 1];
    let response = client.post(connector.url("/write")).body(huge).send().await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    let health = client.get(connector.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

fn read_request(matchers: Vec<LabelMatcher>, response_type: ResponseType) -> Vec<u8> {
    let request = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: i64::MAX / 2,
            matchers,
        }],
        accepted_response_types: vec![response_type as i32],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

fn eq(name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: MatchType::Eq as i32,
        name: name.into(),
        value: value.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_request_may_read_is_bounded() {
    let pg = TestPostgres::start();
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--web.max-read-samples=5000",
            "--metrics.promql.max-fetched-samples=5000",
            "--web.max-query-bytes=10000",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let t0 = recent_ms() - 3_600_000;
    for (name, samples) in [("big", 6000), ("small", 100)] {
        let points: Vec<(i64, f64)> = (0..samples).map(|i| (t0 + i * 500, i as f64)).collect();
        let (status, text) = post(
            &client,
            &connector.url("/write"),
            encode(vec![series(&[("__name__", name)], &points)]),
        )
        .await
        .unwrap();
        assert_eq!(status, 204, "{text}");
    }

    // Remote read: the sample limit holds for both response types; smaller reads pass.
    for response_type in [ResponseType::Samples, ResponseType::StreamedXorChunks] {
        let read = |name: &str| {
            client
                .post(connector.url("/read"))
                .header("Content-Encoding", "snappy")
                .body(read_request(vec![eq("__name__", name)], response_type))
                .send()
        };
        let big = read("big").await.unwrap();
        assert_eq!(big.status(), 400, "{response_type:?}");
        assert!(big.text().await.unwrap().contains("exceeded sample limit (5000)"));
        assert_eq!(read("small").await.unwrap().status(), 200, "{response_type:?}");
    }
    // A small body that decompresses beyond the request size limit is refused unread.
    let bomb = snap::raw::Encoder::new().compress_vec(&vec![0u8; 65 << 20]).unwrap();
    assert!(bomb.len() < 4 << 20);
    let response = client
        .post(connector.url("/read"))
        .header("Content-Encoding", "snappy")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("decompressed body"));
    assert!(connector.memory_bytes("VmHWM") < 1 << 30);

    // PromQL: what selectors read counts, not only what results hold.
    let now = format!("{}", (t0 + 6000 * 500) as f64 / 1000.0);
    let query = |q: &str| {
        client
            .get(connector.url("/api/v1/query"))
            .query(&[("query", q), ("time", &now)])
            .send()
    };
    let too_many = query("count_over_time(big[2h])").await.unwrap();
    assert_eq!(too_many.status(), 422);
    let fine = query("count_over_time(small[2h])").await.unwrap();
    assert_eq!(fine.status(), 200);
    let body: serde_json::Value = fine.json().await.unwrap();
    assert_eq!(body["data"]["result"][0]["value"][1], "100");

    // The series API answers from chunk and head-row bounds, reading no sample: a range
    // holding more samples than the limit still lists its series, from the head and, after
    // compaction, from series chunks.
    let db = pg.pool().await;
    for compacted in [false, true] {
        if compacted {
            promscale_e2e::maintain(&db).await;
        }
        for (start, end, want) in [
            (t0 / 1000 - 60, (t0 + 6000 * 500) / 1000 + 60, 1),
            (t0 / 1000 + 60, t0 / 1000 + 120, 1),
            (0, 100, 0),
        ] {
            let response = client
                .get(connector.url("/api/v1/series"))
                .query(&[
                    ("match[]", "big"),
                    ("start", &start.to_string()),
                    ("end", &end.to_string()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "compacted: {compacted}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(
                body["data"].as_array().unwrap().len(),
                want,
                "compacted: {compacted}, {start}..{end}: {body}"
            );
        }
    }

    // The query text itself is bounded.
    let long = format!("small{}", " + 0".repeat(5000));
    let response = query(&long).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--web.max-query-bytes"),
        "{body}"
    );

    let metrics = connector.metrics_text().await;
    assert!(sum_metric(&metrics, "promscale_ingest_samples_total").unwrap() >= 6100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_request_may_decode_into_is_bounded() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let client = reqwest::Client::new();
    let snappy = |raw: Vec<u8>| snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    // 60 MiB of two-byte entries, within the default 64 MiB body limit: 31 million empty
    // series (remote write 1.0 and 2.0) or queries (remote read), which would decode into
    // gigabytes of structs.
    let empty_entries = |tag: u8| [tag, 0x00].repeat(30 << 20);
    let mut v2 = vec![0x22, 0x00];
    v2.extend(empty_entries(0x2a));
    let bodies = [
        (
            "remote write 1.0",
            "/write",
            "application/x-protobuf",
            snappy(empty_entries(0x0a)),
        ),
        (
            "remote write 2.0",
            "/write",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            snappy(v2),
        ),
        (
            "remote read",
            "/read",
            "application/x-protobuf",
            snappy(empty_entries(0x0a)),
        ),
    ];
    // The same behind an empty protobuf group, which prost skips with all it holds.
    let mut grouped = vec![0x7b, 0x7c];
    grouped.extend(empty_entries(0x0a));
    let grouped = (
        "remote write 1.0 after a group",
        "/write",
        "application/x-protobuf",
        snappy(grouped),
    );
    for (what, path, content_type, body) in bodies.into_iter().chain([grouped]) {
        let response = client
            .post(connector.url(path))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 400, "{what}: {text}");
        assert!(
            text.contains("too many small entries") || text.contains("protobuf groups"),
            "{what}: {text}"
        );
        let peak = connector.memory_bytes("VmHWM");
        assert!(
            peak < 1 << 30,
            "{what}: the connector's resident memory peaked at {peak} bytes"
        );
    }
    // The connector goes on storing real requests.
    let t0 = recent_ms();
    let (status, text) = post(
        &client,
        &connector.url("/write"),
        encode(vec![series(&[("__name__", "after_the_flood")], &[(t0, 1.0)])]),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
}
