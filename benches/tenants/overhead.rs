//! `--scenario overhead`: events/s of a hooked sink over a plain one, in alternating pairs of
//! rounds, with the noise floor, the receiver's own time and CPU per event.

use super::*;

/// The receiver's CPU time histogram, for its `_sum` and `_count`.
const CPU_BASE: &str = "jobsink_receiver_cpu_seconds";

const OWN_BASE: &str = "jobsink_receiver_overhead_seconds";

/// The receiver's latency of accepted events (202): its own time plus its API calls.
const ACCEPTED_BASE: &str = "jobsink_request_duration_seconds";

const ACCEPTED_LABELS: &str = "{method=\"POST\",code=\"202\"}";

/// Histogram snapshots around a round: [own time, CPU time], before and after.
type Span = ([Vec<(f64, f64)>; 2], [Vec<(f64, f64)>; 2]);

/// What the overhead scenario reads of the receiver's metrics at one moment, from one scrape.
struct Reading {
    /// [own time, CPU time] buckets.
    histograms: [Vec<(f64, f64)>; 2],
    /// `_sum` and `_count` of the CPU time and own time histograms.
    cpu: (f64, f64),
    own: (f64, f64),
    /// `_sum` and `_count` of the receiver's latency of accepted events.
    accepted: (f64, f64),
}

impl Reading {
    async fn take(http: &reqwest::Client, metrics: &str) -> Self {
        let text = scrape(http, metrics).await;
        Reading {
            histograms: histograms(&text),
            cpu: sum_count(&text, CPU_BASE, ""),
            own: sum_count(&text, OWN_BASE, ""),
            accepted: sum_count(&text, ACCEPTED_BASE, ACCEPTED_LABELS),
        }
    }
}

/// The mean per event between two `(sum, count)` readings, in microseconds.
fn mean_us(before: (f64, f64), after: (f64, f64)) -> f64 {
    (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e6
}

/// One path's rounds in the overhead scenario, each figure per round.
#[derive(Default)]
struct Rounds {
    /// Events/s.
    per_sec: Vec<f64>,
    spans: Vec<Span>,
    /// Mean CPU time per event, in microseconds (formatted).
    cpu_mean: Vec<String>,
    /// Mean own wall-clock time per event and the sender's median latency, in microseconds:
    /// where a hooked event's extra time goes.
    own_mean: Vec<f64>,
    p50: Vec<f64>,
    /// Mean latency per event in microseconds, seen by the sender and by the receiver (its
    /// own time plus its API calls): with `own_mean`, what the API calls took and what the
    /// way between the two took.
    sender_mean: Vec<f64>,
    receiver_mean: Vec<f64>,
    /// The whole machine's CPU per event, in microseconds: at saturation events/s goes as
    /// its inverse, and it is far less noisy than events/s.
    machine: Vec<f64>,
    /// The receiver process's CPU per event, in microseconds: everything it does for the
    /// event, also off the request's polls (a spare's making, the epoch ticker, the Job
    /// watch's share).
    process: Vec<f64>,
}

impl Rounds {
    /// The last round's events/s over the one before it (the noise floor).
    fn last_over_previous(&self) -> f64 {
        let n = self.per_sec.len();
        self.per_sec[n - 1] / self.per_sec[n - 2]
    }
}

pub(crate) async fn overhead(
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
    a: &Args,
) -> anyhow::Result<()> {
    let per_sink = a.per_sink.map(|n| n.to_string());
    let mut flags = SOLO.to_vec();
    if let Some(n) = &per_sink {
        flags.extend(["--hook-concurrency-per-sink", n.as_str()]);
    }
    let d = start(&flags).await?;
    sink(client, ns, "plain", None).await?;
    sink(client, ns, "hooked", Some(("reject_by_source", "bench/"))).await?;
    accepting(http, &d, ns, "plain").await;
    accepting(http, &d, ns, "hooked").await;
    // The figures are of a hook in service: its first calls after a load run handed off
    // (its probation, docs/hooks.md#where-a-call-runs) and cost milliseconds each, which
    // would land in the first hooked round only. Both sinks get the same warm-up.
    let warmup = jobsink::hook::INLINE_PROBATION as usize + 4;
    for name in ["plain", "hooked"] {
        let url = format!("{}/{ns}/{name}", d.base);
        drive(http, &url, "bench/warmup", 0, warmup, 1).await;
    }
    clear(client, ns).await?;
    println!(
        "hook overhead: {} events per round, {} rounds per C, alternating (plain, hooked, hooked, plain), after {warmup} warm-up events to each sink (the hook's probation); per-sink share {}; each round starts from a namespace without Jobs or event Secrets",
        a.events,
        a.rounds,
        per_sink.as_deref().unwrap_or("default")
    );
    let mut from = 0;
    for &c in a.concurrency.as_deref().unwrap_or(&[1, 8, 32]) {
        // Each path's rounds (plain, hooked) and the per-pair ratios.
        let (mut plain, mut hooked, mut ratios) = (Rounds::default(), Rounds::default(), vec![]);
        // The noise floor: the same path against itself, per block of four rounds (the
        // second plain round over the first, the second hooked over the first).
        let mut same: Vec<f64> = vec![];
        for round in 0..a.rounds * 2 {
            let with_hook = round % 4 == 1 || round % 4 == 2;
            let name = if with_hook { "hooked" } else { "plain" };
            let url = format!("{}/{ns}/{name}", d.base);
            let before = Reading::take(http, &d.metrics).await;
            let busy_before = machine_busy();
            let process_before = process_cpu(d.pid());
            let (s, sender_mean) = drive(http, &url, "bench/x", from, a.events, c).await;
            let per_event_us = |d: Duration| d.as_secs_f64() / a.events as f64 * 1e6;
            let machine_us = per_event_us(machine_busy().saturating_sub(busy_before));
            let process_us = per_event_us(process_cpu(d.pid()).saturating_sub(process_before));
            from += a.events;
            let after = Reading::take(http, &d.metrics).await;
            let path = if with_hook { &mut hooked } else { &mut plain };
            path.per_sec.push(s.per_sec);
            path.cpu_mean
                .push(format!("{:.0}", mean_us(before.cpu, after.cpu)));
            path.own_mean.push(mean_us(before.own, after.own));
            path.spans.push((before.histograms, after.histograms));
            path.p50.push(s.p50.as_secs_f64() * 1e6);
            path.sender_mean.push(sender_mean.as_secs_f64() * 1e6);
            path.receiver_mean
                .push(mean_us(before.accepted, after.accepted));
            path.machine.push(machine_us);
            path.process.push(process_us);
            // Rounds go plain, hooked, hooked, plain: after each odd round both paths' last
            // rounds are neighbours.
            if round % 2 == 1 {
                ratios.push(
                    hooked.per_sec[hooked.per_sec.len() - 1]
                        / plain.per_sec[plain.per_sec.len() - 1],
                );
            }
            if round % 4 == 2 {
                same.push(hooked.last_over_previous());
            } else if round % 4 == 3 {
                same.push(plain.last_over_previous());
            }
            clear(client, ns).await?;
        }
        let text = scrape(http, &d.metrics).await;
        println!(
            "  hook calls by place so far: {}; on spares {}",
            counters(&text, "jobsink_hook_calls_total"),
            counters(&text, "jobsink_hook_calls_on_spares_total")
        );
        ratios.sort_by(f64::total_cmp);
        same.sort_by(f64::total_cmp);
        let mid = median(&ratios);
        let rounded = |v: &[f64]| v.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>();
        println!(
            "  machine CPU per event (all processes, median of rounds): plain {:.0} us, hooked {:.0} us; plain/hooked {:.3} (events/s at saturation goes as this); per round plain {:?}, hooked {:?}",
            median(&plain.machine),
            median(&hooked.machine),
            median(&plain.machine) / median(&hooked.machine),
            rounded(&plain.machine),
            rounded(&hooked.machine),
        );
        println!(
            "  receiver process CPU per event (all its threads, median of rounds): plain {:.0} us, hooked {:.0} us; per round plain {:?}, hooked {:?}",
            median(&plain.process),
            median(&hooked.process),
            rounded(&plain.process),
            rounded(&hooked.process),
        );
        println!(
            "  events/s per round: plain {:?}, hooked {:?}",
            rounded(&plain.per_sec),
            rounded(&hooked.per_sec),
        );
        println!(
            "  means of rounds: own wall-clock time per event plain {:.0} us, hooked {:.0} us; sender's median latency plain {:.0} us, hooked {:.0} us",
            mean(&plain.own_mean),
            mean(&hooked.own_mean),
            mean(&plain.p50),
            mean(&hooked.p50),
        );
        let api = |r: &Rounds| mean(&r.receiver_mean) - mean(&r.own_mean);
        let between = |r: &Rounds| mean(&r.sender_mean) - mean(&r.receiver_mean);
        println!(
            "  mean latency per event (means of rounds), plain / hooked / hooked - plain: sender {:.0} / {:.0} / {:+.0} us = the receiver's own time {:.0} / {:.0} / {:+.0} us + its API calls {:.0} / {:.0} / {:+.0} us + between sender and receiver (connection, HTTP, queueing before the handler) {:.0} / {:.0} / {:+.0} us",
            mean(&plain.sender_mean),
            mean(&hooked.sender_mean),
            mean(&hooked.sender_mean) - mean(&plain.sender_mean),
            mean(&plain.own_mean),
            mean(&hooked.own_mean),
            mean(&hooked.own_mean) - mean(&plain.own_mean),
            api(&plain),
            api(&hooked),
            api(&hooked) - api(&plain),
            between(&plain),
            between(&hooked),
            between(&hooked) - between(&plain),
        );
        let p99s = |spans: &[Span], which: usize| -> Vec<String> {
            spans
                .iter()
                .map(|(b, a)| show_p99(p99_between(&b[which], &a[which])))
                .collect()
        };
        let (own, cpu) = (p99s(&hooked.spans, 0), p99s(&hooked.spans, 1));
        let (plain_own, plain_cpu) = (p99s(&plain.spans, 0), p99s(&plain.spans, 1));
        println!(
            "C={c:>2}: plain {:.1} ev/s, hooked {:.1} ev/s (means, ratio {:.3}); hooked/plain per pair: median {mid:.3}, min {:.3}, max {:.3}, geometric mean {} (95% confidence), all {:?}; noise floor (a path against itself): median {:.3}, min {:.3}, max {:.3}, geometric mean {}; with the hook, per round: own wall-clock time p99 {own:?}, CPU time p99 {cpu:?}, CPU time mean (us) {:?}; without: own wall-clock time p99 {plain_own:?}, CPU time p99 {plain_cpu:?}, CPU time mean (us) {:?}",
            mean(&plain.per_sec),
            mean(&hooked.per_sec),
            mean(&hooked.per_sec) / mean(&plain.per_sec),
            ratios[0],
            ratios[ratios.len() - 1],
            geometric_mean_ci(&ratios),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
            median(&same),
            same.first().copied().unwrap_or(f64::NAN),
            same.last().copied().unwrap_or(f64::NAN),
            geometric_mean_ci(&same),
            hooked.cpu_mean,
            plain.cpu_mean,
        );
    }
    Ok(())
}

/// The geometric mean of ratios with its 95% confidence interval, from Student's t on the
/// logarithms (pairs of rounds are independent samples of the same ratio): `g (lo-hi)`.
/// Unlike the min-max spread, the interval narrows as pairs are added, so it says whether a
/// run had enough of them to resolve a given difference.
fn geometric_mean_ci(ratios: &[f64]) -> String {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let n = logs.len();
    if n < 2 {
        return "n/a (one pair)".into();
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t95(n - 1) * (var / n as f64).sqrt();
    format!(
        "{:.3} ({:.3}-{:.3})",
        mean.exp(),
        (mean - half).exp(),
        (mean + half).exp()
    )
}

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}
