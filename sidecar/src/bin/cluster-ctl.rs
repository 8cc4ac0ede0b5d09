//! `cluster-ctl`: see `sidecar::cli`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match sidecar::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // Usage errors exit 1, as `ipfs-cluster-ctl`'s do (clap's own code would be 2, which
            // scripts read as an error from the API); --help and --version exit 0.
            return if err.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    let enc = cli.enc;
    match sidecar::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (on_stdout, text) = failure.message(enc);
            let _ = if on_stdout {
                std::io::stdout().write_all(text.as_bytes())
            } else {
                std::io::stderr().write_all(text.as_bytes())
            };
            ExitCode::from(failure.exit_code())
        }
    }
}
