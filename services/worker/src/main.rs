//! `pixelfarm-worker`: render jobs for the configured models until SIGTERM, then drain.

use pixelfarm_runtime::{Settings, shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_diffusion::threads::settle();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    telemetry::init(telemetry::SERVICE_LOG);
    let settings = Settings::load().map_err(|e| anyhow::anyhow!(e.chain()))?;
    let stop = shutdown::on_signal();
    pixelfarm_worker::app::start(settings, stop)
        .await?
        .wait()
        .await
}
