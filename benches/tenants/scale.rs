//! `--scenario scale`: events/s with two receiver processes against one API server over one.

use super::*;

pub(crate) async fn scale(
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
    a: &Args,
) -> anyhow::Result<()> {
    let one = start(SOLO).await?;
    let two = start(&["--role", "receiver", "--leader-elect=false"]).await?;
    sink(client, ns, "scale", None).await?;
    accepting(http, &one, ns, "scale").await;
    accepting(http, &two, ns, "scale").await;
    let c = a
        .concurrency
        .as_deref()
        .and_then(|c| c.first().copied())
        .unwrap_or(32);
    println!(
        "scale: {} events per round at total C={c}, one receiver vs two (C/2 each), alternating",
        a.events
    );
    let (mut singles, mut pairs) = (vec![], vec![]);
    let mut from = 0;
    for round in 0..a.rounds * 2 {
        let both = round % 4 == 1 || round % 4 == 2;
        let started = Instant::now();
        if both {
            let half = a.events / 2;
            let u1 = format!("{}/{ns}/scale", one.base);
            let u2 = format!("{}/{ns}/scale", two.base);
            let ((s1, _), (s2, _)) = tokio::join!(
                drive(http, &u1, "bench/scale", from, half, c / 2),
                drive(http, &u2, "bench/scale", from + half, half, c / 2)
            );
            let rate = a.events as f64 / started.elapsed().as_secs_f64();
            println!(
                "round {round}: two receivers {rate:.1} ev/s (p99 {} / {}), errors {}+{}",
                ms(s1.p99),
                ms(s2.p99),
                s1.errors,
                s2.errors
            );
            pairs.push(rate);
        } else {
            let u1 = format!("{}/{ns}/scale", one.base);
            let (s, _) = drive(http, &u1, "bench/scale", from, a.events, c).await;
            println!(
                "round {round}: one receiver {:.1} ev/s (p99 {}), errors {}",
                s.per_sec,
                ms(s.p99),
                s.errors
            );
            singles.push(s.per_sec);
        }
        from += a.events;
        quiesce(client, ns).await?;
    }
    println!(
        "one receiver {:.1} ev/s, two receivers {:.1} ev/s: ratio {:.2}",
        mean(&singles),
        mean(&pairs),
        mean(&pairs) / mean(&singles)
    );
    Ok(())
}
