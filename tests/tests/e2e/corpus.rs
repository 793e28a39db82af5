//! The seed corpora of the fuzz targets (fuzz/corpus/<target>/) fed to the same property checks
//! the targets run, on stable Rust: CI exercises every parser entry point and property without
//! nightly or libFuzzer (`scripts/fuzz` runs the real fuzzing).

#[path = "../../../fuzz/src/checks/mod.rs"]
#[allow(dead_code, clippy::all, clippy::pedantic)]
mod checks;

use std::path::Path;

/// Every file of `fuzz/corpus/<target>` through `check`; at least one file each.
fn each_seed(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seed in {}", dir.display());
}

/// A fuzz target's property check: panics on an input that breaks it.
type Check = fn(&[u8]);

#[test]
fn every_seed_corpus_passes_its_fuzz_check() {
    // Each target's seeds, real fixtures (Debian's os-release, the example configuration, an
    // etcd answer, a manifest of the schema), through the target's own property check.
    let targets: [(&str, Check); 16] = [
        ("version", checks::version),
        ("osrelease", checks::osrelease),
        ("config", checks::config),
        ("window", checks::window),
        ("envelope", checks::envelope),
        ("manifest", checks::manifest),
        ("root", checks::root),
        ("etcd", checks::etcd),
        ("fleetlock", checks::fleetlock),
        ("gpt", checks::gpt),
        ("cmdline", checks::cmdline),
        ("state", checks::state),
        ("contentrange", checks::contentrange),
        ("byteranges", checks::byteranges),
        ("chunkindex", checks::chunkindex),
        ("report", checks::report),
    ];
    for (target, check) in targets {
        each_seed(target, check);
    }
}
