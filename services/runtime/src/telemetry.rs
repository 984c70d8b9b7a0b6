//! Logging: `RUST_LOG` filter (default `info`), compact lines on stderr.

/// Install the global subscriber once; later calls are no-ops.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=warn,aws=warn,h2=warn,tower=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
