//! The SQL decoder (`_prom_catalog.decode_block`, what the views use) reads every block the
//! Rust encoder writes exactly as the Rust decoder does: times over PostgreSQL's whole range,
//! every kind of value, bit for bit; and it refuses corrupt blocks with an error. The same for
//! the decoder of native histogram chunks (`_prom_catalog.decode_histogram_chunk`).

use promscale_connector::storage::codec::{decode, run_sizes, Block, BlockEncoder};
use promscale_connector::storage::histogram_codec::{self, StoredHistogram, HISTOGRAM_COLUMNS};
use promscale_connector::storage::migrations::migrate;
use promscale_e2e::postgres::TestPostgres;

/// A small deterministic generator (xorshift), so every run checks the same blocks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Checks that the SQL decoder reads `block` exactly as the Rust decoder does.
async fn agree(db: &sqlx::PgPool, block: &Block, what: &str) {
    let rust = decode(&block.data, &block.exceptions).unwrap();
    let sql: Vec<(i64, i64, f64)> = sqlx::query_as(
        "SELECT series_id, (extract(epoch FROM sample_time) * 1000)::int8, sample_value
           FROM _prom_catalog.decode_block($1, $2)",
    )
    .bind(&block.data)
    .bind(&block.exceptions)
    .fetch_all(db)
    .await
    .unwrap();
    let bits = |v: &[(i64, i64, f64)]| v.iter().map(|&(s, t, x)| (s, t, x.to_bits())).collect::<Vec<_>>();
    let (sql, rust) = (bits(&sql), bits(&rust));
    assert_eq!(sql.len(), rust.len(), "{what}: sample count");
    if let Some(i) = (0..sql.len()).find(|&i| sql[i] != rust[i]) {
        panic!("{what}: sample {i}: SQL {:?}, Rust {:?}", sql[i], rust[i]);
    }
}

/// Earliest and latest Unix milliseconds PostgreSQL's timestamptz holds (4713 BC, 294276 AD).
const EARLIEST_MS: i64 = -210_866_803_200_000;
const LATEST_MS: i64 = 9_224_318_015_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_decoder_agrees_with_the_rust_decoder_bit_for_bit() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate(&db).await.unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Runs with bit-packed values, and those of them that hold exceptions too.
    let (mut packed, mut packed_with_exceptions) = (0, 0);
    for case in 0..200 {
        let base = match case % 4 {
            0 => EARLIEST_MS + (rng.next() % 1_000_000) as i64,
            1 => LATEST_MS - 100_000_000,
            _ => 1_700_000_000_000 + (rng.next() % 1_000_000_000) as i64,
        };
        let mut encoder = BlockEncoder::new(base, case % 7 == 0);
        let mut series = (rng.next() % 1000) as i64;
        for _ in 0..1 + rng.next() % 5 {
            series += (rng.next() % (1 << 41)) as i64;
            let n = 1 + (rng.next() % 300) as usize;
            let mut t = base;
            let (mut times, mut values) = (Vec::new(), Vec::new());
            let mut v = (rng.next() % 10_000) as f64 / 100.0;
            // Every third block holds series as exporters report them (counters, gauges in
            // pages, decimals; now and then a stale marker or a reset), which are coded
            // bit-packed (scale bytes 16 to 31); the others mix every kind of value.
            let exporter = (case % 3 == 1).then(|| rng.next() % 4);
            for _ in 0..n {
                times.push(t);
                t += match rng.next() % 4 {
                    0 | 1 => 15_000,
                    2 => 15_000 + (rng.next() % 7) as i64 - 3,
                    _ => 1 + (rng.next() % 1_000_000) as i64,
                };
                if let Some(kind) = exporter {
                    let r = rng.next();
                    values.push(match (kind, r % 40) {
                        (_, 0) => f64::from_bits(0x7ff0_0000_0000_0002),
                        (0, 1) => {
                            v = 0.0;
                            v
                        }
                        (0, _) => {
                            v = v.round() + (r >> 8) as f64 % 50.0;
                            v
                        }
                        (1, _) => (1_000_000_000 + (r >> 8) % 10_000 * 4096) as f64,
                        (2, _) => {
                            v = ((v * 100.0).round() + ((r >> 8) % 1500) as f64) / 100.0;
                            v
                        }
                        _ => -273.15 + ((r >> 8) % 200) as f64 / 10.0,
                    });
                    continue;
                }
                values.push(match rng.next() % 12 {
                    0 => f64::from_bits(0x7ff0_0000_0000_0002),
                    1 => f64::from_bits(rng.next()),
                    2 => -0.0,
                    3 => f64::INFINITY,
                    4 => v,
                    5 => {
                        v = (rng.next() % 1_000_000_000) as f64 * 4096.0;
                        v
                    }
                    _ => {
                        v += (rng.next() % 1000) as f64 / 100.0;
                        v
                    }
                });
            }
            if t > LATEST_MS {
                break;
            }
            encoder.push_run(series, &times, &values);
        }
        let block = encoder.finish();
        for run in run_sizes(&block.data).unwrap() {
            if run.is_packed() {
                packed += 1;
                packed_with_exceptions += usize::from(run.exceptions > 0);
            }
        }
        agree(&db, &block, &format!("case {case}")).await;
    }
    assert!(
        packed >= 50 && packed_with_exceptions >= 5,
        "{packed} packed runs, {packed_with_exceptions} with exceptions"
    );

    // Packed runs at the limits: swings across ±(2^53 - 1) among a counter (patches), and
    // values in multiples of 2^50 (a shift of 50 bits) and of 2^3 over the widest range.
    const EXACT: f64 = 9_007_199_254_740_991.0;
    let times: Vec<i64> = (0..64).map(|i| 1_700_000_000_000 + i * 15_000).collect();
    let mut swings: Vec<f64> = vec![EXACT, -EXACT, EXACT, -EXACT, EXACT];
    swings.extend((0..59).map(|i| (i * 3 % 7 + i * 10) as f64));
    swings[40] = -EXACT;
    let coarse: Vec<f64> = (0..64).map(|i| ((i * 5 % 7) - 3) as f64 * 2f64.powi(50)).collect();
    let wide: Vec<f64> = (0..64u64)
        .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 14) as i64 - (1 << 49)) as f64 * 8.0)
        .collect();
    let mut encoder = BlockEncoder::new(times[0], false);
    encoder.push_run(1, &times, &swings);
    encoder.push_run(2, &times, &coarse);
    encoder.push_run(3, &times, &wide);
    let block = encoder.finish();
    let runs = run_sizes(&block.data).unwrap();
    assert!(runs.iter().all(|r| r.is_packed()), "{runs:?}");
    assert!(runs[0].patches >= 4, "{runs:?}");
    assert!(runs.iter().map(|r| r.packed_bits).max() >= Some(50), "{runs:?}");
    agree(&db, &block, "runs at the limits").await;

    // Corrupt blocks are errors, not wrong answers.
    for (data, exceptions, message) in [
        (vec![0u8, 1, 0, 0, 0, 0], vec![], "bad run length"),
        (vec![0, 1, 0, 1, 0, 40, 3], vec![], "bad scale"),
        // packed runs (scale byte 16): three samples 1 ms apart, then the packed values
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 3, 0, 0, 0],
            vec![],
            "bad count of packed exceptions",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 2, 1, 1],
            vec![],
            "bad position of a packed exception",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 0, 50, 7, 0],
            vec![],
            "bad width of packed values",
        ),
        (vec![0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 0, 0, 9], vec![], "truncated"),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 0, 0, 2, 8, 0, 0],
            vec![],
            "trailing bytes",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 0, 0, 2, 8, 3],
            vec![],
            "bad count of patches",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 0, 0, 2, 8, 1, 2, 5],
            vec![],
            "bad position of a patch",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 1, 1, 2, 0, 0, 0, 0],
            vec![],
            "too few exceptions",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 0, 128, 128, 128, 128, 128, 128, 128, 32],
            vec![],
            "packed value out of range",
        ),
        (
            vec![
                0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 130, 128, 128, 128, 128, 128, 128, 64, 0, 0, 0,
            ],
            vec![],
            "packed delta out of range",
        ),
        (
            [
                &[0u8, 1, 0, 3, 0, 4, 1, 16, 0, 254, 255, 255, 255, 255, 255, 255, 31][..],
                &[128, 128, 128, 128, 128, 128, 128, 64, 0, 0, 0],
            ]
            .concat(),
            vec![],
            "packed value out of range",
        ),
        (
            vec![
                0, 1, 0, 3, 0, 4, 1, 16, 0, 2, 0, 0, 0, 1, 0, 130, 128, 128, 128, 128, 128, 128, 64,
            ],
            vec![],
            "packed delta out of range",
        ),
        (
            vec![0, 1, 0, 3, 0, 4, 1, 16, 128, 128, 128, 128, 128, 128, 128, 128, 128, 0],
            vec![],
            "varint",
        ),
        (vec![0, 1, 0, 1, 0, 0, 0], vec![], "too few exceptions"),
        (vec![0, 1, 0, 1, 0, 0, 3, 9], vec![], "trailing bytes"),
        (vec![0, 1, 0, 2], vec![], "truncated"),
    ] {
        let err = sqlx::query("SELECT count(*) FROM _prom_catalog.decode_block($1, $2)")
            .bind(&data)
            .bind(&exceptions as &Vec<f64>)
            .execute(&db)
            .await
            .expect_err(message)
            .to_string();
        assert!(err.contains(message), "{data:?}: {err}");
        assert!(decode(&data, &exceptions).is_err(), "{data:?} decodes in Rust");
    }
}

/// A random histogram after `previous` (often its layout, sometimes a new one).
fn random_histogram(rng: &mut Rng, time: i64, previous: Option<&StoredHistogram>) -> StoredHistogram {
    let special = [
        f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0002),
        f64::INFINITY,
        -0.0,
        0.1,
        1e300,
    ];
    let float = |rng: &mut Rng| -> f64 {
        match rng.next() % 6 {
            0 => special[(rng.next() % special.len() as u64) as usize],
            1 => (rng.next() % 1000) as f64 / 7.0,
            _ => (rng.next() % 100_000) as f64,
        }
    };
    let mut h = match previous {
        Some(p) if !rng.next().is_multiple_of(8) => p.clone(),
        _ => {
            let spans = |rng: &mut Rng| -> (Vec<i32>, usize) {
                let pairs = (rng.next() % 4) as usize;
                let mut flat = Vec::new();
                let mut buckets = 0;
                for _ in 0..pairs {
                    let length = (rng.next() % 5) as i32;
                    flat.extend([(rng.next() % 21) as i32 - 10, length]);
                    buckets += length as usize;
                }
                (flat, buckets)
            };
            let (positive_spans, positive) = spans(rng);
            let (negative_spans, negative) = spans(rng);
            let custom = rng.next().is_multiple_of(5);
            StoredHistogram {
                schema: if custom { -53 } else { (rng.next() % 13) as i32 - 4 },
                zero_threshold: float(rng),
                positive_spans,
                positive_buckets: vec![0.0; positive],
                negative_spans,
                negative_buckets: vec![0.0; negative],
                custom_values: if custom {
                    (0..rng.next() % 4).map(|_| float(rng)).collect()
                } else {
                    vec![]
                },
                ..Default::default()
            }
        }
    };
    h.time = time;
    h.integer = !rng.next().is_multiple_of(3);
    h.reset_hint = (rng.next() % 4) as i16;
    h.sum = float(rng);
    let integer_counts = !rng.next().is_multiple_of(4);
    let count = |rng: &mut Rng, previous: f64| -> f64 {
        if integer_counts {
            if rng.next().is_multiple_of(50) {
                9_007_199_254_740_992.0
            } else {
                (if previous.is_finite() {
                    previous.clamp(0.0, 1e12)
                } else {
                    0.0
                }) + (rng.next() % 300) as f64
            }
        } else {
            float(rng)
        }
    };
    h.count = count(rng, h.count);
    h.zero_count = count(rng, h.zero_count);
    for i in 0..h.positive_buckets.len() {
        h.positive_buckets[i] = count(rng, h.positive_buckets[i]);
    }
    for i in 0..h.negative_buckets.len() {
        h.negative_buckets[i] = count(rng, h.negative_buckets[i]);
    }
    h
}

/// Every field of a histogram, floats as bits.
fn histogram_bits(h: &StoredHistogram) -> impl PartialEq + std::fmt::Debug {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    (
        (h.time, h.integer, h.reset_hint, h.schema),
        [h.count, h.sum, h.zero_threshold, h.zero_count].map(f64::to_bits),
        (h.positive_spans.clone(), h.negative_spans.clone()),
        (
            bits(&h.positive_buckets),
            bits(&h.negative_buckets),
            bits(&h.custom_values),
        ),
    )
}

/// The SQL decoder of native histogram chunks (`_prom_catalog.decode_histogram_chunk`, what
/// `prom_info.native_histogram` uses) reads every chunk the Rust encoder writes as the Rust
/// decoder does, bit for bit, over PostgreSQL's whole time range; and refuses corrupt ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_decoder_of_histogram_chunks_agrees_with_the_rust_decoder_bit_for_bit() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate(&db).await.unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut decoded = 0;
    for case in 0..150 {
        let mut time = match case % 3 {
            0 => EARLIEST_MS + (rng.next() % 1_000_000) as i64,
            1 => LATEST_MS - 100_000_000,
            _ => 1_700_000_000_000 + (rng.next() % 1_000_000_000) as i64,
        };
        let n = (rng.next() % 40) as usize;
        let mut histograms: Vec<StoredHistogram> = Vec::with_capacity(n);
        for _ in 0..n {
            time += 1
                + (rng.next()
                    % if rng.next().is_multiple_of(5) {
                        1_000_000
                    } else {
                        15_001
                    }) as i64;
            let h = random_histogram(&mut rng, time, histograms.last());
            histograms.push(h);
        }
        let chunk = histogram_codec::encode(&histograms);
        let rust = histogram_codec::decode(&chunk.data, &chunk.floats).unwrap();
        let sql: Vec<StoredHistogram> = sqlx::query_as(&format!(
            "SELECT {HISTOGRAM_COLUMNS} FROM _prom_catalog.decode_histogram_chunk($1, $2)"
        ))
        .bind(&chunk.data)
        .bind(&chunk.floats)
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(sql.len(), rust.len(), "case {case}");
        for (i, (s, r)) in sql.iter().zip(&rust).enumerate() {
            assert_eq!(
                histogram_bits(s),
                histogram_bits(r),
                "case {case}, histogram {i}: {r:?}"
            );
        }
        decoded += rust.len();
    }
    assert!(decoded > 2000, "{decoded} histograms checked");

    // Corrupt chunks: every truncation of a good one, a float missing or left over.
    let good: Vec<StoredHistogram> = (0..3)
        .map(|i| random_histogram(&mut Rng(7 + i), 1_000 * i as i64, None))
        .collect();
    let chunk = histogram_codec::encode(&good);
    let mut cases: Vec<(Vec<u8>, Vec<f64>)> = (0..chunk.data.len())
        .map(|cut| (chunk.data[..cut].to_vec(), chunk.floats.clone()))
        .collect();
    cases.push((chunk.data.clone(), chunk.floats[1..].to_vec()));
    cases.push((chunk.data.clone(), [&chunk.floats[..], &[1.0]].concat()));
    for (data, floats) in cases {
        let err = sqlx::query("SELECT count(*) FROM _prom_catalog.decode_histogram_chunk($1, $2)")
            .bind(&data)
            .bind(&floats)
            .execute(&db)
            .await
            .expect_err("a corrupt chunk is refused")
            .to_string();
        assert!(err.contains("corrupt histogram chunk"), "{data:?}: {err}");
        assert!(
            histogram_codec::decode(&data, &floats).is_err(),
            "{data:?} decodes in Rust"
        );
    }
}
