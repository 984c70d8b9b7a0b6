//! `pixelfarm-scheduler`: serve the API and run the leader loops; `migrate`; `tenant create`;
//! `check-config`.

use clap::{Parser, Subcommand};
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
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (or reuse it) and print a new API key for it.
    Create {
        /// Tenant name.
        name: String,
        /// Fair-share weight relative to other tenants.
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init(telemetry::SERVICE_LOG);
    let cli = Cli::parse();
    let settings = Settings::load().map_err(|e| anyhow::anyhow!(e.chain()))?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            for line in pixelfarm_scheduler::check::settings(&settings)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Migrate => settings
            .database
            .migrate()
            .await
            .map_err(|e| anyhow::anyhow!(e.chain())),
        Command::Tenant {
            command: TenantCommand::Create { name, weight },
        } => {
            let store = settings
                .database
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            let key = pixelfarm_scheduler::tenants::new_api_key();
            pixelfarm_scheduler::tenants::ensure(
                store.as_ref(),
                &name,
                weight,
                std::slice::from_ref(&key),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
            println!("{key}");
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
