//! `collector bench`: placeholder replaced below.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
