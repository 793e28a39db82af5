//! `upd-probe PATH`: call access(PATH) in a tight loop until stdin closes, then print
//! `probes N missing M` (used by scripts/bench-switch; the e2e suites use `upd_tests::probe` directly).

use std::io::Read;
use std::path::PathBuf;

use upd_tests::probe::Prober;

fn main() {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: upd-probe PATH   (probes until stdin closes)");
        std::process::exit(2);
    };
    let prober = Prober::start(std::process::id(), &path);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let counts = prober.stop();
    println!("probes {} missing {}", counts.probes, counts.missing);
}
