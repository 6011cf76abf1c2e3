//! `jobsink hook run|bench` until the lead wires them into the main binary.
//!
//! Build the plugins (`plugins/build.sh`), then for example:
//! `cargo run --release --example hook -- bench --wasm plugins/target/wasm32-wasip2/release/route_by_type.wasm`
//! `cargo run --example hook -- run --wasm .../route_by_type.wasm --event tests/data/hooks/event.json --sink tests/data/hooks/jobsink.yaml`

use clap::{Parser, Subcommand};
use jobsink::hook::cli::{BenchArgs, RunArgs, bench, run};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one event through a hook locally and print what it did.
    Run(RunArgs),
    /// Measure a hook's per-event cost.
    Bench(BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Run(args) => run(args).await,
        Command::Bench(args) => bench(args).await,
    }
}
