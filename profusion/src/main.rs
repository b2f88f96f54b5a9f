//! The `profusion` binary: reads its configuration, wires the roles `--target` names, and
//! serves them until SIGINT or SIGTERM; or runs a command (`profusion export`).
//!
//! Owns: the configuration (one clap struct per component, `config`), one wiring function per
//! role (`roles`), the process's storage and data-directory lock (`storage`), and startup and
//! shutdown (`server`). Must not hold protocol, ingest or query logic: those are the libraries
//! it wires.

mod config;
mod error;
mod export;
mod roles;
mod server;
mod storage;
mod tokens;

use config::Config;
use server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    // The Delta kernel logs every snapshot it builds at info: only its warnings are news.
    let filter = EnvFilter::try_new(format!("{},buoyant_kernel=warn", config.log.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(config::Command::Export(args)) = &config.command {
        return match runtime.block_on(export::run(&config, args)) {
            Ok(report) => {
                // Scripts read what was done from this line.
                let (start, end) = report.range.unwrap_or_default();
                println!(
                    "{{\"exported\":{},\"start_nanos\":{start},\"end_nanos\":{end},\"rows\":{},\"files\":{},\"bytes\":{}}}",
                    report.range.is_some(),
                    report.rows,
                    report.files,
                    report.bytes
                );
                std::process::ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("export failed: {message}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(config::Command::Tokens(command)) = &config.command {
        return match runtime.block_on(tokens::run(&config, command)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("profusion tokens: {message}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let code = runtime.block_on(async move {
        let mut shutdown = Box::pin(shutdown_signal());
        // A start-up waiting on a store or catalog that does not answer gives way to SIGTERM:
        // what it had done is durable (the WAL) or redone on the next start.
        let started = tokio::select! {
            started = Server::start(config) => started,
            () = &mut shutdown => {
                tracing::info!("shutdown requested during start-up; exiting without serving");
                return std::process::ExitCode::SUCCESS;
            }
        };
        let server = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "startup failed");
                return std::process::ExitCode::FAILURE;
            }
        };
        tracing::info!(address = %server.addr, "profusion is listening");
        // Tests and scripts read the bound port from this line.
        println!("profusion listening on http://{}", server.addr);
        match server.run(shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "shutdown failed");
                std::process::ExitCode::FAILURE
            }
        }
    });
    // The head is flushed by now; work still on the blocking pool (a request decoding a body)
    // must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// SIGINT or SIGTERM, whichever comes first. The handlers are installed when this is called,
/// not when the future is first polled: a SIGTERM during start-up, or between the "listening"
/// line and the server's first poll of it, must stop the process cleanly, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::interrupt())
            .and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
        async move {
            match handlers {
                Ok((mut int, mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
