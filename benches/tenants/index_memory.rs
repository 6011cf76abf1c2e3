//! `--scenario index-memory`: the resident memory of a Job index of 100,000 entries.

use super::*;

pub(crate) fn index_memory() -> anyhow::Result<()> {
    const JOBS: usize = 100_000;
    let index = jobsink::job_index::JobIndex::unwatched();
    let before = status_kib(std::process::id(), "VmRSS:");
    for i in 0..JOBS {
        // 20 namespaces; upstream-style names: the sink's name and a 32-digit hash.
        let sink = jobsink::crd::SinkId::new(format!("team-{:02}", i % 20), "job-sink-logger");
        let name = jobsink::job::job_name(&sink.name, "bench/source", &format!("event-{i}"));
        let uid = jobsink::job_index::JobUid::new(&format!("5f0c7d1e-0000-4000-8000-{i:012}"));
        index.confirm(&sink, &name, uid);
    }
    let after = status_kib(std::process::id(), "VmRSS:");
    println!(
        "Job index: {} entries, RSS {before} KiB -> {after} KiB: {:.1} MiB, {:.0} bytes per Job",
        index.len(),
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / JOBS as f64
    );
    Ok(())
}
