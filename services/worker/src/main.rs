//! `pixelfarm-worker`: render jobs for the configured models until SIGTERM, then drain;
//! `pixelfarm-worker check-config`: load and check the settings as a start does, connecting to
//! nothing, and exit non-zero naming the bad field.

use pixelfarm_core::ChainResult;
use pixelfarm_runtime::{Settings, shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_kernels::threads::settle();
    }
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("check-config") => return check_config(),
        Some(other) => anyhow::bail!("unknown command `{other}`; accepted: check-config, or none"),
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

fn check_config() -> anyhow::Result<()> {
    let settings = Settings::load().chained()?;
    for line in pixelfarm_worker::check::settings(&settings)? {
        println!("{line}");
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    telemetry::init(telemetry::SERVICE_LOG);
    let settings = Settings::load().chained()?;
    let stop = shutdown::on_signal();
    pixelfarm_worker::app::start(settings, stop)
        .await?
        .wait()
        .await
}
