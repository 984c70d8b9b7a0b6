//! Start-up checks of [`Settings`] that need no network: what `check-config` of each binary
//! runs before its own checks, so that a configuration which cannot work is refused with the
//! field named before anything connects (CI runs every shipped configuration through them).
//!
//! Each check returns `Invalid` with a message that starts with the field (`database.url: …`)
//! and says what is accepted. Secrets are never printed: a URL is described by its scheme only.

use pixelfarm_blob::MAX_SIGNED_URL_SECONDS;
use pixelfarm_core::{Error, Result};

use crate::Settings;
use crate::settings::{BlobKind, BlobSettings, BrokerSettings, DatabaseSettings, TlsSettings};

/// The sections every process reads: `database`, `broker` and `blob`.
///
/// # Errors
/// `Invalid` naming the first bad field.
pub fn common(settings: &Settings) -> Result<()> {
    database(&settings.database)?;
    broker(&settings.broker)?;
    blob(&settings.blob)
}

/// `database`: a `postgres://` or `sqlite://` URL and a pool of at least one connection.
///
/// # Errors
/// `Invalid` naming the field.
pub fn database(s: &DatabaseSettings) -> Result<()> {
    let accepted = "accepted: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite://PATH";
    match s.url.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => {}
        Some(("postgres" | "postgresql", rest)) if !rest.is_empty() => {}
        Some((scheme, _)) => {
            return Err(Error::invalid(format!(
                "database.url: scheme `{scheme}` or an empty location; {accepted}"
            )));
        }
        None => {
            return Err(Error::invalid(format!(
                "database.url: is not a URL; {accepted}"
            )));
        }
    }
    if s.max_connections == 0 {
        return Err(Error::invalid(
            "database.max_connections: is 0; accepted: 1 or more",
        ));
    }
    Ok(())
}

/// `broker`: an `amqp://` / `amqps://` URL or `inproc`, a usable name prefix, a window of at
/// least one message.
///
/// # Errors
/// `Invalid` naming the field.
pub fn broker(s: &BrokerSettings) -> Result<()> {
    let accepted = "accepted: amqp://USER:PASSWORD@HOST:PORT/VHOST, amqps://… or inproc";
    if s.url != "inproc" {
        match s.url.split_once("://") {
            Some(("amqp" | "amqps", rest)) if !rest.is_empty() => {}
            Some((scheme, _)) => {
                return Err(Error::invalid(format!(
                    "broker.url: scheme `{scheme}` or an empty location; {accepted}"
                )));
            }
            None => {
                return Err(Error::invalid(format!(
                    "broker.url: is not a URL; {accepted}"
                )));
            }
        }
    }
    // Queue names are `<prefix>.jobs.<model>`; RabbitMQ allows 255 bytes.
    if s.prefix.is_empty()
        || s.prefix.len() > 128
        || !s
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(format!(
            "broker.prefix: is `{}`; accepted: 1 to 128 of a-z A-Z 0-9 - _ .",
            s.prefix
        )));
    }
    if s.window_per_model == 0 {
        return Err(Error::invalid(
            "broker.window_per_model: is 0; accepted: 1 or more",
        ));
    }
    Ok(())
}

/// `blob`: for `s3`, a valid bucket name, an `http(s)://` endpoint or none, a region, and both
/// keys or neither (the default credential chain); for `local`, a folder.
///
/// # Errors
/// `Invalid` naming the field.
pub fn blob(s: &BlobSettings) -> Result<()> {
    match s.kind {
        BlobKind::Local => {
            if s.dir.as_os_str().is_empty() {
                return Err(Error::invalid(
                    "blob.dir: is empty; kind `local` needs the folder objects go to",
                ));
            }
        }
        BlobKind::S3 => {
            let b = &s.s3.bucket;
            let ok_chars = b
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
            if !(3..=63).contains(&b.len())
                || !ok_chars
                || b.starts_with(['-', '.'])
                || b.ends_with(['-', '.'])
            {
                return Err(Error::invalid(format!(
                    "blob.bucket: is `{b}`; accepted: an S3 bucket name (3 to 63 of a-z 0-9 - ., \
                     starting and ending with a letter or digit)"
                )));
            }
            let e = &s.s3.endpoint;
            if !e.is_empty() && !has_host(e) {
                return Err(Error::invalid(format!(
                    "blob.endpoint: is `{e}`; accepted: empty (AWS) or http(s)://HOST[:PORT]"
                )));
            }
            if s.s3.region.is_empty() {
                return Err(Error::invalid(
                    "blob.region: is empty; accepted: a region name (any value for most non-AWS stores)",
                ));
            }
            if s.s3.access_key_id.is_empty() != s.s3.secret_access_key.is_empty() {
                return Err(Error::invalid(
                    "blob.access_key_id / blob.secret_access_key: only one is set; set both, or \
                     neither to use the default AWS credential chain",
                ));
            }
        }
    }
    signed_urls(s)
}

/// `blob.signed_urls`: an expiry SigV4 can sign (kind `s3` only) and an `http(s)://` public
/// endpoint or none.
fn signed_urls(s: &BlobSettings) -> Result<()> {
    let u = &s.signed_urls;
    if u.expiry_seconds > MAX_SIGNED_URL_SECONDS {
        return Err(Error::invalid(format!(
            "blob.signed_urls.expiry_seconds: is {}; accepted: 0 (no signed URLs) to \
             {MAX_SIGNED_URL_SECONDS} (7 days)",
            u.expiry_seconds
        )));
    }
    if u.expiry_seconds > 0 && s.kind != BlobKind::S3 {
        return Err(Error::invalid(
            "blob.signed_urls.expiry_seconds: is set, but blob.kind is `local`; accepted: 0 \
             unless blob.kind is `s3` (a folder has no URLs to sign)",
        ));
    }
    let e = &u.public_endpoint;
    if !e.is_empty() && !has_host(e) {
        return Err(Error::invalid(format!(
            "blob.signed_urls.public_endpoint: is `{e}`; accepted: empty (blob.endpoint) or \
             http(s)://HOST[:PORT]"
        )));
    }
    Ok(())
}

/// Whether `url` is `http://` or `https://` followed by something.
fn has_host(url: &str) -> bool {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty())
}

/// One line per shared section, for the `check-config` report (URLs by scheme only: no secrets).
pub fn describe(settings: &Settings) -> Vec<String> {
    let scheme = |url: &str| url.split_once("://").map_or(url, |(s, _)| s).to_string();
    let blob = match settings.blob.kind {
        BlobKind::S3 => format!(
            "blob: s3 bucket `{}`, prefix `{}`, endpoint {}, {}",
            settings.blob.s3.bucket,
            settings.blob.s3.prefix,
            if settings.blob.s3.endpoint.is_empty() {
                "AWS".to_string()
            } else {
                scheme(&settings.blob.s3.endpoint)
            },
            match settings.blob.signed_urls.expiry_seconds {
                0 => "no signed URLs".to_string(),
                n => format!("signed URLs valid {n} s"),
            }
        ),
        BlobKind::Local => format!("blob: local folder {}", settings.blob.dir.display()),
    };
    // The same sources, in the same order, as `Settings::load`.
    let dir = std::env::var("PIXELFARM_CONFIG_DIR").unwrap_or_else(|_| "config".into());
    let env = std::env::var("PIXELFARM_ENV").unwrap_or_else(|_| "local".into());
    let layer = |name: &str| {
        let p = std::path::Path::new(&dir).join(name);
        let missing = if p.is_file() { "" } else { " (absent)" };
        format!("{}{missing}", p.display())
    };
    vec![
        format!(
            "settings ok: {} -> {} -> PIXELFARM__* environment",
            layer("base.yaml"),
            layer(&format!("{env}.yaml"))
        ),
        format!(
            "database: {}, {} connections",
            scheme(&settings.database.url),
            settings.database.max_connections
        ),
        format!(
            "broker: {}, prefix `{}`, window {} per model",
            scheme(&settings.broker.url),
            settings.broker.prefix,
            settings.broker.window_per_model
        ),
        blob,
    ]
}

/// A listen address `HOST:PORT` (`0.0.0.0:8080`, `[::]:8080`, `localhost:0`).
///
/// # Errors
/// `Invalid` naming `field`.
pub fn listen_addr(field: &str, addr: &str) -> Result<()> {
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(Error::invalid(format!(
            "{field}: is `{addr}`; accepted: HOST:PORT, e.g. 0.0.0.0:8080"
        )));
    }
    Ok(())
}

/// A `tls` section named `field` (`scheduler.tls`): both files or neither. The files themselves
/// are read at start (on Kubernetes they come from a Secret that `check-config` does not see).
///
/// # Errors
/// `Invalid` naming the file that is missing from the pair.
pub fn tls(field: &str, s: &TlsSettings) -> Result<()> {
    let accepted = "accepted: both cert_file and key_file (PEM), or neither for plain TCP";
    match (
        s.cert_file.as_os_str().is_empty(),
        s.key_file.as_os_str().is_empty(),
    ) {
        (false, true) => Err(Error::invalid(format!(
            "{field}.key_file: is empty while {field}.cert_file is set; {accepted}"
        ))),
        (true, false) => Err(Error::invalid(format!(
            "{field}.cert_file: is empty while {field}.key_file is set; {accepted}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn defaults_pass() {
        common(&Settings::default()).unwrap();
        listen_addr("x", &Settings::default().scheduler.http_addr).unwrap();
    }

    #[test]
    fn each_field_is_named() {
        let mut s = Settings::default();
        s.database.url = "mysql://root@db/x".into();
        assert!(err(common(&s)).contains("database.url: scheme `mysql`"));
        s.database.url = "sqlite://pf.db".into();
        s.database.max_connections = 0;
        assert!(err(common(&s)).contains("database.max_connections"));

        let mut s = Settings::default();
        s.broker.url = "amqp:/oops".into();
        assert!(err(common(&s)).contains("broker.url"));
        s.broker.url = "inproc".into();
        s.broker.prefix = "has space".into();
        assert!(err(common(&s)).contains("broker.prefix"));

        let mut s = Settings::default();
        s.blob.s3.bucket = "Upper_Case".into();
        assert!(err(common(&s)).contains("blob.bucket"));
        s.blob.s3.bucket = "fine-bucket".into();
        s.blob.s3.endpoint = "127.0.0.1:8333".into();
        assert!(err(common(&s)).contains("blob.endpoint"));
        s.blob.s3.endpoint = String::new();
        s.blob.s3.access_key_id = "only-one".into();
        assert!(err(common(&s)).contains("blob.access_key_id"));
        s.blob.s3.access_key_id = String::new();
        s.blob.signed_urls.expiry_seconds = MAX_SIGNED_URL_SECONDS + 1;
        assert!(err(common(&s)).starts_with("blob.signed_urls.expiry_seconds: is 604801"));
        s.blob.signed_urls.expiry_seconds = MAX_SIGNED_URL_SECONDS;
        common(&s).unwrap();
        s.blob.signed_urls.public_endpoint = "images.example.com".into();
        assert!(err(common(&s)).starts_with("blob.signed_urls.public_endpoint"));
        s.blob.signed_urls.public_endpoint = "https://images.example.com".into();
        common(&s).unwrap();
        s.blob.kind = BlobKind::Local;
        assert!(err(common(&s)).contains("blob.kind is `local`"));

        assert!(err(listen_addr("worker.http_addr", "9091")).contains("worker.http_addr"));

        let mut t = TlsSettings {
            cert_file: "tls.crt".into(),
            ..Default::default()
        };
        assert!(err(tls("scheduler.tls", &t)).starts_with("scheduler.tls.key_file: is empty"));
        (t.cert_file, t.key_file) = ("".into(), "tls.key".into());
        assert!(err(tls("scheduler.tls", &t)).starts_with("scheduler.tls.cert_file: is empty"));
        t.cert_file = "tls.crt".into();
        tls("scheduler.tls", &t).unwrap();
        tls("scheduler.tls", &TlsSettings::default()).unwrap();
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut s = Settings::default();
        s.database.url = "mysql://root:hunter2@db/x".into();
        assert!(!err(common(&s)).contains("hunter2"));
    }
}
