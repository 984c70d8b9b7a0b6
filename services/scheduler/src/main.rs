//! `pixelfarm-scheduler`: serve the API and run the leader loops; `migrate`; `tenant …` (tenants,
//! quotas, API keys); `check-config`.

use clap::{Parser, Subcommand};
use pixelfarm_core::ChainResult;
use pixelfarm_runtime::{Settings, shutdown, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "pixelfarm scheduler: batch API, dispatcher and maintenance"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and run the leader loops (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Load and check the settings as `serve` does, connecting to nothing; exit non-zero naming
    /// the bad field.
    CheckConfig,
    /// Manage tenants, their quotas, retention, API keys and webhooks.
    Tenant {
        #[command(subcommand)]
        command: pixelfarm_scheduler::tenants::TenantCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init(telemetry::SERVICE_LOG);
    let cli = Cli::parse();
    let settings = Settings::load().chained()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            for line in pixelfarm_scheduler::check::settings(&settings)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Migrate => Ok(settings.database.migrate().await.chained()?),
        Command::Tenant { command } => {
            let store = settings.database.connect().await.chained()?;
            let default_retention = settings.scheduler.retention.retention();
            let policy = settings.scheduler.webhooks.policy();
            let lines = pixelfarm_scheduler::tenants::run(
                store.as_ref(),
                default_retention,
                &policy,
                command,
            )
            .await
            .chained()?;
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Serve => {
            let stop = shutdown::on_signal();
            pixelfarm_scheduler::app::start(settings, stop)
                .await?
                .wait()
                .await
        }
    }
}
