//! Writes the CRD YAML generated from the Rust types: plain manifests into the folders given
//! on the command line, and Helm templates into the folder after `--chart` (`make crds` does
//! both: `crds/` and the chart's `templates/crds/`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut plain = Vec::new();
    let mut chart = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--chart" {
            match args.next() {
                Some(folder) => chart.push(PathBuf::from(folder)),
                None => return usage(),
            }
        } else {
            plain.push(PathBuf::from(arg));
        }
    }
    if plain.is_empty() && chart.is_empty() {
        return usage();
    }
    let outputs = plain
        .iter()
        .map(|f| (f, promscale_crds::to_yaml as fn(&_) -> String))
        .chain(
            chart
                .iter()
                .map(|f| (f, promscale_crds::to_chart_template as fn(&_) -> String)),
        );
    for (folder, render) in outputs {
        for crd in promscale_crds::all() {
            let path = folder.join(promscale_crds::file_name(&crd));
            if let Err(e) = std::fs::write(&path, render(&crd)) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: crdgen [FOLDER]... [--chart FOLDER]...  (writes <group>_<plural>.yaml for every CRD)");
    ExitCode::from(2)
}
