//! Writes the CRD YAML generated from the Rust types into each folder given on the command
//! line (`make crds` passes `crds/` and the Helm chart's folder).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let folders: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if folders.is_empty() {
        eprintln!("usage: crdgen <folder>...  (writes <group>_<plural>.yaml for every CRD into each folder)");
        return ExitCode::from(2);
    }
    for folder in &folders {
        for crd in promscale_crds::all() {
            let path = folder.join(promscale_crds::file_name(&crd));
            if let Err(e) = std::fs::write(&path, promscale_crds::to_yaml(&crd)) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
