//! Health checks: the operator's executables in `HEALTH_DIR`, run in name order before a boot
//! is marked good.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::host::machine::Machine;

/// Run every executable in `HEALTH_DIR`, in name order; the first failure is reported with its output.
pub fn run_checks(m: &Machine) -> Result<(), String> {
    let dir = m.root.join(&m.settings.health_dir);
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut checks: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.is_file() && fs::metadata(p).is_ok_and(|md| md.permissions().mode() & 0o111 != 0)
        })
        .collect();
    checks.sort();
    for c in checks {
        let out = Command::new(&c)
            .env("UPD_ROOT", m.root.dir())
            .output()
            .map_err(|e| format!("health check {} could not run: {e}", c.display()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "health check {} failed ({}): {}",
                c.display(),
                out.status,
                text.trim()
            ));
        }
        tracing::info!(check = %c.display(), "health check passed");
    }
    Ok(())
}
