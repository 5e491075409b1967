//! Runs the Kubernetes API emulator standalone, for people and scripts:
//!
//!     cargo run --release --example kube-emulator -- --listen 127.0.0.1:6443 --kubeconfig /tmp/emulator.kubeconfig
//!
//! Writes a kubeconfig for `kubectl --kubeconfig FILE` and serves until killed.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Kubernetes API server emulator (test infrastructure of pureflash-operator)")]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let emulator = kube_emulator::Emulator::start_on(args.listen).await?;
    emulator.write_kubeconfig(&args.kubeconfig)?;
    eprintln!(
        "kube-emulator: serving {} (kubeconfig: {})",
        emulator.url(),
        args.kubeconfig.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
