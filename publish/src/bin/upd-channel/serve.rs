//! `upd-channel serve`: the repository over HTTP, for development and demos.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// Binds, prints the URL on stdout (one line, for scripts), and serves until killed.
pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let (bound, server) = upd_publish::serve::bind(args.repo.clone(), args.listen)
            .await
            .with_context(|| format!("serving {}", args.repo.display()))?;
        println!("http://{bound}/");
        use std::io::Write as _;
        std::io::stdout().flush()?;
        server.await?;
        anyhow::Ok(())
    })
}
