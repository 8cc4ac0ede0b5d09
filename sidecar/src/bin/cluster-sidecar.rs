use clap::Parser;

/// mimalloc rather than the system allocator: the peer allocates and frees on every thread of
/// the runtime, and glibc's arenas made malloc and free about a tenth of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = sidecar::config::DaemonArgs::parse();
    match sidecar::daemon::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the peer stopped on an error");
            eprintln!("cluster-sidecar: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
