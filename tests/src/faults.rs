//! The infrastructure faults of the fault-injection suite, on the machine's real services:
//! RabbitMQ stopped and started, Postgres restarted, SeaweedFS frozen (SIGSTOP) or killed.
//!
//! Every fault that leaves a service down returns a [`Restore`] guard that brings it back when
//! dropped — also while a failing test unwinds — so the shared services outlive the suite.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Proc, Stack, spawn, wait_ready};

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_port(port: u16, open: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while port_open(port) != open {
        assert!(
            Instant::now() < deadline,
            "port {port} not {} within {within:?}",
            if open { "open" } else { "closed" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs its action when dropped (once), unless [`Restore::now`] already did.
pub struct Restore {
    what: &'static str,
    action: Option<Box<dyn FnOnce() + Send>>,
}

impl Restore {
    fn new(what: &'static str, action: impl FnOnce() + Send + 'static) -> Self {
        Restore {
            what,
            action: Some(Box::new(action)),
        }
    }

    /// Restore now.
    pub fn now(mut self) {
        if let Some(a) = self.action.take() {
            a();
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(a) = self.action.take() {
            eprintln!("restoring {} after a failure", self.what);
            a();
        }
    }
}

/// RabbitMQ's AMQP port.
const AMQP_PORT: u16 = 5672;
/// SeaweedFS's S3 port.
const S3_PORT: u16 = 8333;

/// Stop the RabbitMQ node (every connection drops); the guard starts it again.
pub fn stop_rabbitmq() -> Restore {
    run("rabbitmqctl", &["stop"]);
    wait_port(AMQP_PORT, false, Duration::from_secs(60));
    Restore::new("rabbitmq", start_rabbitmq)
}

fn start_rabbitmq() {
    if !port_open(AMQP_PORT) {
        run("rabbitmq-server", &["-detached"]);
    }
    wait_port(AMQP_PORT, true, Duration::from_secs(90));
}

/// Restart Postgres (`-m fast`: every session is cut, as in a failover).
pub fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian postgresql cluster")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a postgresql version folder");
    let guard = Restore::new("postgresql", {
        let version = version.clone();
        move || {
            if !port_open(5432) {
                let _ = Command::new("pg_ctlcluster")
                    .args(["--skip-systemctl-redirect", &version, "main", "start"])
                    .status();
            }
        }
    });
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "fast",
        ],
    );
    wait_port(5432, true, Duration::from_secs(30));
    guard.now();
}

fn seaweed_pid() -> String {
    let out = Command::new("pgrep")
        .args(["-f", "weed server"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("SeaweedFS runs (scripts/dev-services starts it)")
        .trim()
        .to_string()
}

/// Freeze SeaweedFS (SIGSTOP): connections open, nothing answers. The guard thaws it.
pub fn freeze_seaweedfs() -> Restore {
    let pid = seaweed_pid();
    run("kill", &["-STOP", &pid]);
    Restore::new("seaweedfs (SIGCONT)", move || {
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
    })
}

/// Kill SeaweedFS (SIGKILL): connections are refused. The guard starts it with
/// `scripts/dev-services`.
pub fn kill_seaweedfs() -> Restore {
    run("kill", &["-KILL", &seaweed_pid()]);
    wait_port(S3_PORT, false, Duration::from_secs(30));
    Restore::new("seaweedfs", || {
        run(
            crate::repo().join("scripts/dev-services").to_str().unwrap(),
            &[],
        );
    })
}

impl Stack {
    /// SIGKILL the scheduler and start a new one on the same ports and config.
    pub async fn restart_scheduler(&mut self) {
        self.scheduler.signal("KILL");
        let _ = self.scheduler.child.wait().await;
        let log = self
            .dir
            .path()
            .join(format!("scheduler-killed-{}.log", self.retired.len()));
        std::fs::rename(&self.scheduler.log, &log).unwrap();
        self.retired.push(log);
        let http = self.scheduler.http;
        self.scheduler = spawn(
            self.dir.path(),
            "pixelfarm-scheduler",
            "scheduler",
            &[],
            http,
        );
        wait_ready(&mut self.scheduler).await;
    }

    /// Every log this stack's processes wrote, the retired ones included.
    pub fn all_logs(&self) -> Vec<(String, String)> {
        std::iter::once(&self.scheduler)
            .chain(&self.workers)
            .map(|p: &Proc| p.log.clone())
            .chain(self.retired.iter().cloned())
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap_or_default(),
                )
            })
            .collect()
    }
}
