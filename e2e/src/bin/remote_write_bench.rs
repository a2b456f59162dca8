//! Remote-write throughput, side by side: the connector (on a local PostgreSQL) and Debian's
//! Prometheus with `--web.enable-remote-write-receiver`, fed the very same request bodies
//! by the same concurrent senders, one after the other in one run.
//!
//! The first round creates the series and is timed on its own. Then `--repeat` steady-state
//! repetitions of `--rounds` rounds alternate between the two receivers (both stay up), on
//! one continuous timeline; the report gives each repetition and the ratio of the medians,
//! so that noise from a shared 2-core machine shows instead of skewing one side. Last come
//! `--repeat` rollouts: each a round of entirely new series of the same metrics, as after a
//! Deployment rollout. Then the connector restarts and both receivers get one more round of
//! the first series: the connector knows none of them any more, its database knows them all,
//! as after every restart or upgrade of a connector pod. The slowest single request of all is
//! reported too, and the CPU time a round of new series costs each receiver (its processes, and
//! the whole machine's, the senders included). Last, unless
//! `--no-v2`, the steady state again in remote-write 2.0 bodies, against the connector and
//! Prometheus 3's own receiver. `--statement-stats` adds where the database's time went in
//! the rounds of new series, by statement. `--wait-events` adds what the connector's
//! database sessions were doing meanwhile (e.g. running, waiting for a lock or for I/O, or
//! waiting for the connector inside a transaction), sampled from `pg_stat_activity`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::builder::TypedValueParser;
use clap::Parser;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::{sum_metric, Prometheus};
use promscale_e2e::workload::{send_rounds, send_rounds_timed, send_rounds_timed_as, Protocol, Workload};

#[derive(Parser, Debug)]
#[command(about = "Remote-write throughput: promscale-connector vs Prometheus' own receiver")]
struct Args {
    /// Distinct series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Rounds per steady-state repetition (each round sends one sample for every series).
    #[arg(long, default_value_t = 40)]
    rounds: usize,
    /// Steady-state repetitions per receiver, alternating between them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    repeat: usize,
    /// Rounds of entirely new series (rollouts) per receiver; `--repeat` when not given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    rollouts: Option<usize>,
    /// Samples per remote-write request (Prometheus' max_samples_per_send).
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Concurrent senders (Prometheus' shards).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Skip the remote-write 2.0 comparison (the connector vs Prometheus 3's receiver).
    #[arg(long)]
    no_v2: bool,
    /// Report where the database's time goes in the rounds of new series and in the round
    /// after the connector's restart: statements, nested ones included, by total time
    /// (`pg_stat_statements`). The server then runs with those statistics on, which costs
    /// some of its time.
    #[arg(long)]
    statement_stats: bool,
    /// Report what the connector's database sessions did during its rounds of new series:
    /// `pg_stat_activity` sampled with 2 ms between samples, as the mean number of sessions
    /// per sample in each state or wait event, by statement. The sampling takes CPU from the
    /// connector's rounds only, which lowers their rate; its database session is left out of
    /// their CPU times, the bench's own side of it is not.
    #[arg(long)]
    wait_events: bool,
    /// Extra flags for the connector, e.g. --connector-arg=--ingest.writers=2 (repeatable).
    #[arg(long = "connector-arg", allow_hyphen_values = true)]
    connector_args: Vec<String>,
}

/// CPU time used so far (`/proc`; zero where there is none): the whole machine's busy time,
/// and that of the receivers' processes, so that a round's CPU cost shows beside its wall
/// time. Processes are told by name (`comm`, cut at 15 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    machine: Duration,
    connector: Duration,
    postgres: Duration,
    prometheus: Duration,
}

impl CpuTimes {
    /// Clock ticks (USER_HZ, 100 on Linux) as a duration.
    fn ticks(n: u64) -> Duration {
        Duration::from_millis(n * 10)
    }

    /// CPU times now, without process `left_out` (the `--wait-events` sampler's database
    /// session): it counts neither as PostgreSQL's nor as the machine's.
    fn now_without(left_out: Option<u32>) -> CpuTimes {
        let left_out = left_out.map(|pid| pid.to_string());
        let mut times = CpuTimes::default();
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
        {
            // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
            let busy: u64 = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
                .sum();
            times.machine = Self::ticks(busy);
        }
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ...: utime and stime are the 12th and 13th fields after comm.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let used = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            let cpu = Self::ticks(used(11) + used(12));
            if left_out
                .as_deref()
                .is_some_and(|pid| entry.file_name().to_str() == Some(pid))
            {
                times.machine = times.machine.saturating_sub(cpu);
                continue;
            }
            match &stat[open + 1..close] {
                "promscale-conne" => times.connector += cpu,
                "postgres" => times.postgres += cpu,
                "prometheus" => times.prometheus += cpu,
                _ => {}
            }
        }
        times
    }

    fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            machine: self.machine.saturating_sub(before.machine),
            connector: self.connector.saturating_sub(before.connector),
            postgres: self.postgres.saturating_sub(before.postgres),
            prometheus: self.prometheus.saturating_sub(before.prometheus),
        }
    }

    fn add(&mut self, other: CpuTimes) {
        self.machine += other.machine;
        self.connector += other.connector;
        self.postgres += other.postgres;
        self.prometheus += other.prometheus;
    }
}

/// The statements that took the most of the database's time since the statistics were
/// reset, to stderr.
async fn print_statement_stats(db: &sqlx::PgPool, during: &str) {
    let statements: Vec<(bool, i64, f64, String)> = sqlx::query_as(
        "SELECT toplevel, calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
           FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 16",
    )
    .fetch_all(db)
    .await
    .unwrap();
    eprintln!("database time in {during}, by statement (nested ones indented):");
    for (top, calls, ms, query) in statements {
        let indent = if top { "" } else { "    " };
        eprintln!("{ms:>10.1} ms {calls:>7} calls  {indent}{query}");
    }
}

/// What the connector's sessions were doing, sampled from `pg_stat_activity`: samples taken,
/// the time they took, and how many sessions were seen in each (state or wait event,
/// statement).
#[derive(Default)]
struct WaitEvents {
    samples: u64,
    sampling: Duration,
    seen: HashMap<(String, String), u64>,
}

impl WaitEvents {
    /// Samples the connector's sessions through `db`, 2 ms between samples, until `stop` is
    /// set; gives the session back. Idle sessions (in the pool, or waiting for the
    /// connector's next statement) are not counted; sessions idle inside a transaction are,
    /// with the statement they ran last.
    async fn sample(mut db: sqlx::PgConnection, stop: Arc<AtomicBool>) -> (sqlx::PgConnection, WaitEvents) {
        let mut events = WaitEvents::default();
        let started = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // A statement of its own each time: a transaction sees one snapshot of the activity.
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'running')
                             ELSE state END,
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 70)
                   FROM pg_stat_activity
                  WHERE application_name = 'promscale-connector' AND backend_type = 'client backend'
                    AND state <> 'idle'",
            )
            .fetch_all(&mut db)
            .await
            .unwrap();
            events.samples += 1;
            for row in rows {
                *events.seen.entry(row).or_default() += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        events.sampling = started.elapsed();
        (db, events)
    }

    fn add(&mut self, other: WaitEvents) {
        self.samples += other.samples;
        self.sampling += other.sampling;
        for (key, n) in other.seen {
            *self.seen.entry(key).or_default() += n;
        }
    }

    fn print(&self) {
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let per_sample = |n: u64| n as f64 / self.samples.max(1) as f64;
        eprintln!(
            "the connector's database sessions in its rounds of new series ({} samples, one every {:.1} ms; mean sessions per sample, idle ones left out): {:.2} in all",
            self.samples,
            self.sampling.as_secs_f64() * 1000.0 / self.samples.max(1) as f64,
            per_sample(self.seen.values().sum())
        );
        for ((what, statement), n) in seen.into_iter().take(16) {
            eprintln!("{:>8.2}  {what:<28} {statement}", per_sample(*n));
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The connector's own `/metrics` text.
async fn own_metrics(connector: &Connector) -> String {
    reqwest::get(connector.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn connector_stats(metrics: &str) -> String {
    let m = |name: &str| sum_metric(metrics, name).unwrap_or(f64::NAN);
    format!(
        "{:.0} transactions, {:.0} samples and {:.1} requests per transaction, {:.1} ms per transaction, {:.1} ms per request",
        m("promscale_ingest_db_write_duration_seconds_count"),
        m("promscale_ingest_db_batch_samples_sum") / m("promscale_ingest_db_batch_samples_count"),
        m("promscale_ingest_db_batch_requests_sum") / m("promscale_ingest_db_batch_requests_count"),
        1000.0 * m("promscale_ingest_db_write_duration_seconds_sum") / m("promscale_ingest_db_write_duration_seconds_count"),
        1000.0 * m("promscale_ingest_request_duration_seconds_sum") / m("promscale_ingest_request_duration_seconds_count"),
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // The first round, the steady-state repetitions, then one round per rollout, then (for
    // remote write 2.0) a first round and the repetitions again, later in time.
    let rounds = 1 + args.rounds * args.repeat;
    let rollout_count = args.rollouts.unwrap_or(args.repeat);
    let v2_rounds = if args.no_v2 { 0 } else { rounds };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let workload = Workload {
        series: args.series,
        first_id: 0,
        senders: args.concurrency,
        batch: args.batch,
        step_ms: 15_000,
        start_ms: now_ms - (rounds + 1 + rollout_count + v2_rounds) as i64 * 15_000,
        rounds,
    };
    eprintln!("building payload: {workload:?}");
    let payload = workload.payload();
    // Rollouts: a round of entirely new series of the same metrics, after the steady state.
    let rollouts: Vec<_> = (0..rollout_count)
        .map(|r| {
            Workload {
                first_id: (r + 1) * args.series,
                start_ms: workload.start_ms + (rounds + r) as i64 * 15_000,
                rounds: 1,
                ..workload.clone()
            }
            .payload()
        })
        .collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();

    let mut pg = TestPostgres::start();
    if args.statement_stats {
        pg.enable_statement_stats().await;
    }
    let mut connector_args = vec!["--log.level", "warn"];
    connector_args.extend(args.connector_args.iter().map(String::as_str));
    let mut connector = Connector::start(&pg.uri(), &connector_args).await;
    let prometheus = Prometheus::start(
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let targets = [
        ("promscale-connector + PostgreSQL", connector.url("/write")),
        ("prometheus 2.42 receiver (TSDB)", prometheus.url("/api/v1/write")),
    ];

    let mut first_round = vec![];
    for (name, url) in &targets {
        eprintln!("first round (creates {} series) -> {name}", args.series);
        first_round.push(send_rounds(&client, url, &payload, 0..1).await);
    }
    let mut rates = [vec![], vec![]];
    let mut slowest = [Duration::ZERO; 2];
    for rep in 0..args.repeat {
        let rounds = 1 + rep * args.rounds..1 + (rep + 1) * args.rounds;
        for (t, (name, url)) in targets.iter().enumerate() {
            let (took, slow) = send_rounds_timed(&client, url, &payload, rounds.clone()).await;
            let rate = (args.series * args.rounds) as f64 / took.as_secs_f64();
            eprintln!("repetition {} -> {name}: {rate:.0} samples/s", rep + 1);
            rates[t].push(rate);
            slowest[t] = slowest[t].max(slow);
        }
    }
    let mut rollout_rates = [vec![], vec![]];
    // A round of new series takes a tenth of a second here: the rounds' total time gives a
    // steadier rate than their median.
    let mut rollout_time = [Duration::ZERO; 2];
    let mut rollout_cpu = [CpuTimes::default(); 2];
    // Only with --statement-stats: its own pool, the statistics reset before the rounds.
    let stats_db = if args.statement_stats {
        let db = pg.pool().await;
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&db)
            .await
            .unwrap();
        Some(db)
    } else {
        None
    };
    // Only with --wait-events: a session of its own, sampling during the connector's rounds,
    // its statements kept out of --statement-stats, its CPU out of the rounds'.
    let mut wait_db = None;
    let mut sampler_pid = None;
    if args.wait_events {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&pg.uri()).await.unwrap();
        if args.statement_stats {
            sqlx::query("SET pg_stat_statements.track = 'none'")
                .execute(&mut db)
                .await
                .unwrap();
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut db)
            .await
            .unwrap();
        sampler_pid = u32::try_from(pid).ok();
        wait_db = Some(db);
    }
    let mut wait_events = WaitEvents::default();
    for (r, rollout) in rollouts.iter().enumerate() {
        for (t, (name, url)) in targets.iter().enumerate() {
            let cpu = CpuTimes::now_without(sampler_pid);
            // The connector's rounds only (target 0).
            let sampler = if t == 0 { wait_db.take() } else { None }.map(|db| {
                let stop = Arc::new(AtomicBool::new(false));
                (stop.clone(), tokio::spawn(WaitEvents::sample(db, stop)))
            });
            let (took, slow) = send_rounds_timed(&client, url, rollout, 0..1).await;
            if let Some((stop, _)) = &sampler {
                stop.store(true, Ordering::Relaxed);
            }
            rollout_cpu[t].add(CpuTimes::now_without(sampler_pid).since(cpu));
            if let Some((_, sampling)) = sampler {
                let (db, events) = sampling.await.unwrap();
                wait_db = Some(db);
                wait_events.add(events);
            }
            rollout_time[t] += took;
            let rate = args.series as f64 / took.as_secs_f64();
            eprintln!(
                "rollout {} ({} new series) -> {name}: {rate:.0} samples/s",
                r + 1,
                args.series
            );
            rollout_rates[t].push(rate);
            slowest[t] = slowest[t].max(slow);
        }
    }
    if let Some(db) = &stats_db {
        print_statement_stats(db, "the rounds of new series").await;
    }
    if args.wait_events {
        wait_events.print();
    }
    // A connector restart: a round of the first series, all in the database, none cached.
    let restart_payload = Workload {
        start_ms: workload.start_ms + (rounds + rollout_count) as i64 * 15_000,
        rounds: 1,
        ..workload.clone()
    }
    .payload();
    eprintln!(
        "connector before its restart: {}",
        connector_stats(&own_metrics(&connector).await)
    );
    connector.stop();
    connector = Connector::start(&pg.uri(), &connector_args).await;
    let mut after_restart = [0.0; 2];
    for (t, url) in [connector.url("/write"), prometheus.url("/api/v1/write")]
        .iter()
        .enumerate()
    {
        if let (0, Some(db)) = (t, &stats_db) {
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(db)
                .await
                .unwrap();
        }
        let (took, slow) = send_rounds_timed(&client, url, &restart_payload, 0..1).await;
        after_restart[t] = args.series as f64 / took.as_secs_f64();
        eprintln!("after a connector restart -> {url}: {:.0} samples/s", after_restart[t]);
        slowest[t] = slowest[t].max(slow);
        if let (0, Some(db)) = (t, &stats_db) {
            print_statement_stats(db, "the round after the connector's restart").await;
        }
    }
    // Remote write 2.0: the same series and samples as 2.0 bodies, later in time, to the
    // connector and to Prometheus 3's own receiver (a process of its own: its first round
    // creates the series there).
    let mut v2_rates = [vec![], vec![]];
    let mut v2_prometheus = None;
    if !args.no_v2 {
        let v2_workload = Workload {
            start_ms: workload.start_ms + (rounds + rollout_count + 1) as i64 * 15_000,
            ..workload.clone()
        };
        eprintln!("building remote-write 2.0 payload");
        let v2_payload = v2_workload.payload_in(Protocol::V2);
        let prometheus3 = Prometheus::start_v3(
            |_| "global: {scrape_interval: 1h}\n".to_string(),
            &["--web.enable-remote-write-receiver"],
        )
        .await;
        let v2_targets = [connector.url("/write"), prometheus3.url("/api/v1/write")];
        for url in &v2_targets {
            send_rounds_timed_as(&client, url, &v2_payload, 0..1, Protocol::V2).await;
        }
        for rep in 0..args.repeat {
            let rounds = 1 + rep * args.rounds..1 + (rep + 1) * args.rounds;
            for (t, url) in v2_targets.iter().enumerate() {
                let (took, _) = send_rounds_timed_as(&client, url, &v2_payload, rounds.clone(), Protocol::V2).await;
                let rate = (args.series * args.rounds) as f64 / took.as_secs_f64();
                eprintln!("remote write 2.0, repetition {} -> {url}: {rate:.0} samples/s", rep + 1);
                v2_rates[t].push(rate);
            }
        }
        v2_prometheus = Some(prometheus3);
    }
    eprintln!(
        "connector after its restart: {}",
        connector_stats(&own_metrics(&connector).await)
    );

    println!(
        "\nremote-write throughput: {} series, {} samples/request, {} concurrent senders, {} x {} samples per repetition",
        args.series, args.batch, args.concurrency, args.series, args.rounds
    );
    println!(
        "{:<34} {:>12} {:>12} {:>30} {:>14} {:>16} {:>12}",
        "receiver", "first round", "median/s", "each repetition, samples/s", "rollout/s", "after restart/s", "slowest"
    );
    for (t, (name, _)) in targets.iter().enumerate() {
        let each: Vec<String> = rates[t].iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{name:<34} {:>11.2}s {:>12.0} {:>30} {:>14.0} {:>16.0} {:>10.0}ms",
            first_round[t].as_secs_f64(),
            median(rates[t].clone()),
            each.join(" "),
            median(rollout_rates[t].clone()),
            after_restart[t],
            slowest[t].as_secs_f64() * 1000.0,
        );
    }
    println!(
        "ratio connector/prometheus, steady state (median): {:.2}x",
        median(rates[0].clone()) / median(rates[1].clone())
    );
    println!(
        "ratio connector/prometheus, a round of new series of existing metrics (median): {:.2}x",
        median(rollout_rates[0].clone()) / median(rollout_rates[1].clone())
    );
    println!(
        "ratio connector/prometheus, all {} rounds of new series together: {:.2}x ({:.0} vs {:.0} samples/s)",
        rollouts.len(),
        rollout_time[1].as_secs_f64() / rollout_time[0].as_secs_f64(),
        (rollouts.len() * args.series) as f64 / rollout_time[0].as_secs_f64(),
        (rollouts.len() * args.series) as f64 / rollout_time[1].as_secs_f64(),
    );
    // CPU time of a round: where the work goes, steadier than the rates on a shared machine.
    let per_round = |d: Duration| d.as_secs_f64() * 1000.0 / rollouts.len() as f64;
    let busy = |t: usize| rollout_cpu[t].machine.as_secs_f64() / rollout_time[t].as_secs_f64();
    println!(
        "a round of new series, CPU time: connector {:.0} ms + PostgreSQL {:.0} ms (the machine {:.0} ms, {:.2} cores busy), prometheus {:.0} ms (the machine {:.0} ms, {:.2} cores busy)",
        per_round(rollout_cpu[0].connector),
        per_round(rollout_cpu[0].postgres),
        per_round(rollout_cpu[0].machine),
        busy(0),
        per_round(rollout_cpu[1].prometheus),
        per_round(rollout_cpu[1].machine),
        busy(1),
    );
    println!(
        "ratio connector/prometheus, a round of known series right after a connector restart: {:.2}x",
        after_restart[0] / after_restart[1]
    );
    println!(
        "ratio connector/prometheus, first round (creates series): {:.2}x",
        first_round[1].as_secs_f64() / first_round[0].as_secs_f64()
    );
    if v2_prometheus.is_some() {
        let each = |r: &Vec<f64>| r.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" ");
        println!(
            "remote write 2.0, steady state: connector {:.0}/s ({}), prometheus 3.16 receiver {:.0}/s ({})",
            median(v2_rates[0].clone()),
            each(&v2_rates[0]),
            median(v2_rates[1].clone()),
            each(&v2_rates[1]),
        );
        println!(
            "ratio connector/prometheus 3.16, remote write 2.0 steady state (median): {:.2}x; connector 2.0/1.0: {:.2}x",
            median(v2_rates[0].clone()) / median(v2_rates[1].clone()),
            median(v2_rates[0].clone()) / median(rates[0].clone())
        );
    }
}
