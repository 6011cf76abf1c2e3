//! The `jobsink` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use jobsink::config::{Cli, Command, CrdKind, HookCommand, LogFormat};

/// mimalloc instead of glibc's malloc, for the binary only (the library's tests keep the
/// system allocator): the receiver allocates and frees many small buffers per event, and
/// glibc's malloc and free (consolidating freed chunks) were about 30 % of its CPU samples
/// under load (BENCHMARKS.md, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    // The hook tools print their results on stdout (`hook push` only the pinned reference):
    // their logs go to stderr.
    init_tracing(cli.log_format, matches!(cli.command, Command::Hook(_)));
    match cli.command {
        Command::Crd { kind } => {
            match kind {
                CrdKind::Jobsink => print!("{}", jobsink::crd::crd_yaml()),
                CrdKind::Eventpolicy => print!("{}", jobsink::policy::crd::crd_yaml()),
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Serve(args) => done(runtime()?.block_on(jobsink::serve(*args))),
        Command::Hook(HookCommand::Run(args)) => {
            done(runtime()?.block_on(jobsink::hook::cli::run(args)))
        }
        Command::Hook(HookCommand::Bench(args)) => {
            done(runtime()?.block_on(jobsink::hook::cli::bench(args)))
        }
        Command::Hook(HookCommand::Push(args)) => {
            done(runtime()?.block_on(jobsink::hook::cli::push(args)))
        }
        Command::Hook(HookCommand::Compile(args)) => {
            Ok(jobsink::hook::compile_stdin_to_stdout(args.cpu_seconds))
        }
    }
}

fn done(result: anyhow::Result<()>) -> anyhow::Result<std::process::ExitCode> {
    result.map(|()| std::process::ExitCode::SUCCESS)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn init_tracing(format: LogFormat, to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,tower=warn,hyper=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, to_stderr) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).init(),
    }
}
