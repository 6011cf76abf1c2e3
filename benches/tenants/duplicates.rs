//! `--scenario duplicates`: new events/s against copies answered by the Job index, and by a
//! receiver without it (the API way).

use super::*;

pub(crate) async fn duplicates(
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
    a: &Args,
) -> anyhow::Result<()> {
    let d = start(SOLO).await?;
    let api_way = start(&[
        "--role",
        "receiver",
        "--job-index=false",
        "--leader-elect=false",
    ])
    .await?;
    sink(client, ns, "dups", None).await?;
    accepting(http, &d, ns, "dups").await;
    accepting(http, &api_way, ns, "dups").await;
    println!(
        "duplicates: {} new events, then the same events again (index), then again (API way)",
        a.events
    );
    let mut from = 0;
    for &c in a.concurrency.as_deref().unwrap_or(&[1, 32]) {
        let url = format!("{}/{ns}/dups", d.base);
        let (new, _) = drive(http, &url, "bench/dup", from, a.events, c).await;
        quiesce(client, ns).await?;
        // The index has the pairs once the watch reported the Jobs; quiesce waited longer.
        let (cached, _) = drive(http, &url, "bench/dup", from, a.events, c).await;
        let api_url = format!("{}/{ns}/dups", api_way.base);
        let (api, _) = drive(http, &api_url, "bench/dup", from, a.events, c).await;
        from += a.events;
        println!(
            "C={c:>2}: new {:.1} ev/s (p50 {}); duplicates from the index {:.1}/s (p50 {}, {:.1}x new); through the API {:.1}/s (p50 {}, {:.2}x new); errors {}+{}+{}",
            new.per_sec,
            ms(new.p50),
            cached.per_sec,
            ms(cached.p50),
            cached.per_sec / new.per_sec,
            api.per_sec,
            ms(api.p50),
            api.per_sec / new.per_sec,
            new.errors,
            cached.errors,
            api.errors
        );
    }
    let text = http.get(&d.metrics).send().await?.text().await?;
    for line in text
        .lines()
        .filter(|l| l.starts_with("jobsink_duplicates_total"))
    {
        println!("{line}");
    }
    Ok(())
}
