//! The repository's install scripts (`scripts/install-*`), run by the harness before the first use
//! of what they install: the test command needs no set-up step of its own.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::anyhow;

/// Runs `scripts/<name>` once per process and returns what it printed on stdout (trimmed). The
/// scripts are idempotent and serialise concurrent runs themselves; this only saves the re-runs.
pub fn install(name: &str) -> anyhow::Result<String> {
    static DONE: OnceLock<Mutex<HashMap<String, Result<String, String>>>> = OnceLock::new();
    let mut done = DONE.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    done.entry(name.to_string()).or_insert_with(|| run(name)).clone().map_err(|e| anyhow!(e))
}

fn run(name: &str) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name);
    match Command::new("bash").arg(&script).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Ok(out) => {
            Err(format!("{} failed ({}):\n{}", script.display(), out.status, String::from_utf8_lossy(&out.stderr)))
        }
        Err(e) => Err(format!("running {}: {e}", script.display())),
    }
}
