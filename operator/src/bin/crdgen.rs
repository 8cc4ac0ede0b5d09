//! Writes the CRDs to `crds/` and to the chart's `crds/` (the same files). A test fails when the
//! checked-in files are stale.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, yaml) in operator::crd::definitions() {
        for dir in operator::crd::DIRECTORIES {
            let path = root.join(dir).join(&file);
            if let Err(e) = std::fs::write(&path, &yaml) {
                eprintln!("crdgen: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("crdgen: wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
