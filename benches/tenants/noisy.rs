//! `--scenario noisy`: a namespace flooding two sinks whose hook runs to its deadline, beside a
//! quiet namespace's hooked sink; the quiet one's refusals, events/s and latency with and
//! without the flood, and the receiver's CPU per request.

use super::*;

pub(crate) async fn noisy(
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
    // Issue 24's probe: the noisy tenant is a namespace of its own with two sinks whose hook
    // runs to a long deadline with a large memory limit and failurePolicy Fail.
    let loud = format!("{ns}-noisy");
    namespace(client, &loud).await?;
    let greedy = json!({"timeoutMs": 1000, "memoryLimitMiB": 256, "failurePolicy": "Fail"});
    for name in ["noisy-a", "noisy-b"] {
        hooked_sink(client, &loud, name, Some(("bad_loop", "")), greedy.clone()).await?;
    }
    sink(client, ns, "quiet", Some(("reject_by_source", "bench/"))).await?;
    accepting(http, &d, ns, "quiet").await;
    let quiet_url = format!("{}/{ns}/quiet", d.base);
    let noisy_urls = ["noisy-a", "noisy-b"].map(|n| format!("{}/{loud}/{n}", d.base));
    println!(
        "noisy neighbour: namespace {ns}'s 'quiet' (reject_by_source) at C=8, {} events per round; namespace {loud}'s 'noisy-a' and 'noisy-b' (bad_loop, timeoutMs 1000, memoryLimitMiB 256, Fail) flooded at C=16 each; per-sink share {}",
        a.events,
        per_sink.as_deref().unwrap_or("default")
    );
    let pid = d.pid();
    let (mut alone, mut beside) = (vec![], vec![]);
    // Process CPU per request in each kind of round: the quiet events alone, and every
    // request (the quiet tenant's and the flood's) beside the flood.
    let (mut cpu_alone, mut cpu_beside) = (vec![], vec![]);
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    let mut from = 0;
    for round in 0..a.rounds {
        let flooded = round % 4 == 1 || round % 4 == 2;
        let stop = Arc::new(AtomicBool::new(false));
        let mut flood = tokio::task::JoinSet::new();
        let cpu_before = process_cpu(pid);
        if flooded {
            for w in 0..32 {
                let url = noisy_urls[w % 2].clone();
                let (http, stop) = (http.clone(), stop.clone());
                flood.spawn(async move {
                    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
                    let mut i = w * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let code = post(&http, &url, "noise/", i).await.unwrap_or(0);
                        *seen.entry(code).or_default() += 1;
                        if code == 503 {
                            // What a sender does on Retry-After, shortened: the flood stays on.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    seen
                });
            }
            // Let the flood fill its share of the slots first.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let (s, _) = drive(http, &quiet_url, "bench/quiet", from, a.events, 8).await;
        from += a.events;
        stop.store(true, Ordering::Relaxed);
        let mut flood_requests = 0;
        while let Some(seen) = flood.join_next().await {
            for (code, n) in seen? {
                *answers.entry(code).or_default() += n;
                flood_requests += n;
            }
        }
        let cpu = process_cpu(pid).saturating_sub(cpu_before);
        let per_request = cpu.as_secs_f64() * 1e6 / (a.events + flood_requests) as f64;
        println!(
            "round {round} {:>8}: {:>7.1} ev/s  p50 {}  p99 {}  refused {}  receiver CPU {per_request:.0} us/request",
            if flooded { "flooded" } else { "quiet" },
            s.per_sec,
            ms(s.p50),
            ms(s.p99),
            s.errors
        );
        if flooded {
            beside.push(s);
            cpu_beside.push(per_request);
        } else {
            alone.push(s);
            cpu_alone.push(per_request);
        }
        quiesce(client, ns).await?;
    }
    settle(client, &loud).await?;
    let mean = |v: &[Stats], f: fn(&Stats) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (q_rate, n_rate) = (mean(&alone, |s| s.per_sec), mean(&beside, |s| s.per_sec));
    let p = |s: &Stats| s.p50.as_secs_f64() * 1e3;
    let p99 = |s: &Stats| s.p99.as_secs_f64() * 1e3;
    let refused = |v: &[Stats]| v.iter().map(|s| s.errors).sum::<usize>();
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0} us (min {lo:.0}, max {hi:.0})", median(v))
    };
    println!(
        "quiet tenant alone: {q_rate:.1} ev/s, p50 {:.2} ms, p99 {:.2} ms, refused {}; beside the flood: {n_rate:.1} ev/s, p50 {:.2} ms, p99 {:.2} ms, refused {}",
        mean(&alone, p),
        mean(&alone, p99),
        refused(&alone),
        mean(&beside, p),
        mean(&beside, p99),
        refused(&beside)
    );
    println!(
        "ratios (flooded / alone): ev/s {:.2}, p50 {:.2}, p99 {:.2}; the flood's answers: {answers:?}",
        n_rate / q_rate,
        mean(&beside, p) / mean(&alone, p),
        mean(&beside, p99) / mean(&alone, p99)
    );
    println!(
        "receiver process CPU per request (median of rounds): quiet rounds {}, flooded rounds {}",
        spread(&cpu_alone),
        spread(&cpu_beside)
    );
    Ok(())
}
