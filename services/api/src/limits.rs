//! The limits a scheduler replica counts in its own memory: failed authentications per client
//! address, submits per tenant and minute, and open watches per tenant. The limits counted in the
//! store (unfinished jobs, jobs per day, priority) are checked in the submit's transaction.

use pixelfarm_core::{Error, ErrorKind, Limit, Result, TenantId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed authentications one address may make at once before it is refused.
pub const FAILED_AUTH_BURST: f64 = 20.0;

/// Failed authentications per second an address earns back after the burst: a client with a
/// wrong key is told so quickly, and a key guesser gets one database lookup a second.
pub const FAILED_AUTH_PER_SECOND: f64 = 1.0;

/// Addresses tracked at once; past it, addresses whose bucket refilled are forgotten, and if
/// none has, the table is cleared (a flood from that many addresses is not stopped here).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// One address's bucket: tokens left and when it was last refilled.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let earned = now.duration_since(self.at).as_secs_f64() * FAILED_AUTH_PER_SECOND;
        Bucket {
            tokens: (self.tokens + earned).min(FAILED_AUTH_BURST),
            at: now,
        }
    }
}

/// A token bucket of failed authentications per client address.
#[derive(Default)]
pub struct FailedAuth {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedAuth {
    /// Refuse `peer` when it spent its failed authentications, before any database work.
    ///
    /// # Errors
    /// `RateLimited` naming the limit.
    pub fn check(&self, peer: IpAddr) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("failed-auth lock");
        let Some(b) = buckets.get_mut(&peer) else {
            return Ok(());
        };
        *b = b.refilled(now);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::RateLimited,
            format!(
                "too many failed authentications from this address; accepted: {FAILED_AUTH_BURST} at once, then {FAILED_AUTH_PER_SECOND} a second; retry later with a valid api key"
            ),
        ))
    }

    /// Spend one of `peer`'s failed authentications.
    pub fn failed(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("failed-auth lock");
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&peer) {
            buckets.retain(|_, b| b.refilled(now).tokens < FAILED_AUTH_BURST);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                buckets.clear();
            }
        }
        let b = buckets.entry(peer).or_insert(Bucket {
            tokens: FAILED_AUTH_BURST,
            at: now,
        });
        *b = b.refilled(now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

/// The window of `submits_per_minute`.
const MINUTE: Duration = Duration::from_secs(60);

/// Submits per tenant in the current minute (a fixed window per tenant).
#[derive(Default)]
pub struct SubmitRate {
    windows: Mutex<HashMap<TenantId, (Instant, u32)>>,
}

impl SubmitRate {
    /// Count a submit of `tenant`, or refuse it when `limit` submits were counted in its window.
    ///
    /// # Errors
    /// `RateLimited` ([`Limit::SubmitRate`]) with the limit and the submits counted.
    pub fn admit(&self, tenant: TenantId, limit: Option<u32>) -> Result<()> {
        let Some(limit) = limit else { return Ok(()) };
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("submit-rate lock");
        let (start, n) = windows.entry(tenant).or_insert((now, 0));
        if now.duration_since(*start) >= MINUTE {
            (*start, *n) = (now, 0);
        }
        if *n >= limit {
            let left = MINUTE.saturating_sub(now.duration_since(*start)).as_secs() + 1;
            return Err(Limit::SubmitRate.refusal(
                u64::from(limit),
                &format!("{n} submits were made in this minute; the next is accepted in {left} s"),
            ));
        }
        *n += 1;
        Ok(())
    }
}

/// Watches open per tenant on this replica.
#[derive(Default, Clone)]
pub struct Watches {
    open: Arc<Mutex<HashMap<TenantId, u32>>>,
}

/// One open watch; closing it (dropping) frees its place.
pub struct WatchSlot {
    open: Arc<Mutex<HashMap<TenantId, u32>>>,
    tenant: TenantId,
    gauge: prometheus::IntGauge,
}

impl Watches {
    /// A place for one more watch of `tenant`, when fewer than `limit` are open; `gauge` follows
    /// the tenant's open watches.
    ///
    /// # Errors
    /// `QuotaExceeded` ([`Limit::Watches`]) with the limit and the watches open.
    pub fn open(
        &self,
        tenant: TenantId,
        limit: Option<u32>,
        gauge: prometheus::IntGauge,
    ) -> Result<WatchSlot> {
        let mut open = self.open.lock().expect("watches lock");
        let n = open.entry(tenant).or_insert(0);
        if let Some(limit) = limit
            && *n >= limit
        {
            return Err(Limit::Watches.refusal(
                u64::from(limit),
                &format!("{n} watches are open on this scheduler"),
            ));
        }
        *n += 1;
        gauge.inc();
        Ok(WatchSlot {
            open: self.open.clone(),
            tenant,
            gauge,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("watches lock");
        if let Some(n) = open.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_auth_refuses_after_the_burst() {
        let f = FailedAuth::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILED_AUTH_BURST as usize {
            f.check(a).unwrap();
            f.failed(a);
        }
        let e = f.check(a).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(e.to_string().contains("20 at once"), "{e}");
        f.check(b).expect("another address is not refused");
    }

    #[test]
    fn submit_rate_counts_per_tenant() {
        let r = SubmitRate::default();
        let (a, b) = (TenantId::generate(), TenantId::generate());
        r.admit(a, Some(2)).unwrap();
        r.admit(a, Some(2)).unwrap();
        let e = r.admit(a, Some(2)).unwrap_err();
        assert_eq!(Limit::of(&e), Some(Limit::SubmitRate));
        assert!(
            e.to_string()
                .contains("`submits_per_minute` is 2; 2 submits"),
            "{e}"
        );
        r.admit(b, Some(2)).unwrap();
        r.admit(a, None).expect("no limit");
    }

    #[test]
    fn watch_slots_free_their_place() {
        let w = Watches::default();
        let t = TenantId::generate();
        let g = prometheus::IntGauge::new("g", "g").unwrap();
        let one = w.open(t, Some(1), g.clone()).unwrap();
        let e = w.open(t, Some(1), g.clone()).err().unwrap();
        assert_eq!(Limit::of(&e), Some(Limit::Watches));
        assert_eq!(g.get(), 1);
        drop(one);
        assert_eq!(g.get(), 0);
        w.open(t, Some(1), g).expect("room again");
    }
}
