use clap::Parser;

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
