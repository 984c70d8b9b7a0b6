//! Logging: `RUST_LOG` filter, compact lines on stderr.

/// Default filter of the services.
pub const SERVICE_LOG: &str = "info,sqlx=warn,lapin=warn,aws=warn,h2=warn,tower=warn";

/// Default filter of the command line (progress bars own the terminal).
pub const CLI_LOG: &str = "warn";

/// Install the global subscriber once with `default` unless `RUST_LOG` is set; later calls are no-ops.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
