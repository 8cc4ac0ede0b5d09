//! `cluster-ctl`: see `sidecar::cli`.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = sidecar::cli::Cli::parse();
    match sidecar::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", sidecar::cli::error_text(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
