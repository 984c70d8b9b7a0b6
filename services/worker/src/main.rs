//! `pixelfarm-worker`: render jobs for the configured models until SIGTERM, then drain.

use pixelfarm_runtime::{Settings, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init(telemetry::SERVICE_LOG);
    let settings = Settings::load().map_err(|e| anyhow::anyhow!(e.chain()))?;
    let stop = shutdown::on_signal();
    pixelfarm_worker::app::start(settings, stop)
        .await?
        .wait()
        .await
}
