//! Every JobStore implementation passes the same suite, against the real database.

mod postgres {
    pixelfarm_store::store_conformance!(pixelfarm_store::testing::fresh_postgres_store());
}

mod sqlite {
    pixelfarm_store::store_conformance!(pixelfarm_store::testing::fresh_sqlite_store());
}

mod postgres_only {
    use pixelfarm_store::PgStore;
    use pixelfarm_store::testing::fresh_postgres_db;

    #[tokio::test]
    async fn one_leader_at_a_time() {
        use pixelfarm_core::JobStore;
        let db = fresh_postgres_db().await;
        let url = db.url();
        let a = PgStore::connect(url, 2).await.unwrap();
        let b = PgStore::connect(url, 2).await.unwrap();
        let lead = a.try_lead().await.unwrap().expect("a leads");
        assert!(
            b.try_lead().await.unwrap().is_none(),
            "b must not lead while a does"
        );
        drop(lead);
        // The lock goes with a's session; closing the detached connection ends it.
        let mut again = None;
        for _ in 0..50 {
            again = b.try_lead().await.unwrap();
            if again.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(again.is_some(), "b leads once a is gone");
    }

    /// The leader's lock lives in its session: when Postgres cuts that session (a restart, a
    /// failover, an idle-session kill), the leader learns it at its next check, and another
    /// scheduler can lead at once.
    #[tokio::test]
    async fn leadership_ends_with_its_session() {
        use pixelfarm_core::JobStore;
        let db = fresh_postgres_db().await;
        let a = PgStore::connect(db.url(), 2).await.unwrap();
        let b = PgStore::connect(db.url(), 2).await.unwrap();
        let mut lead = a.try_lead().await.unwrap().expect("a leads");
        assert!(lead.still_leader().await);
        // With a timeout, pg_terminate_backend returns once the backend has exited, which is
        // after it released its locks; without one it only signals, and b could race the exit.
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks
             WHERE locktype = 'advisory'
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(b.pool())
        .await
        .unwrap();
        assert_eq!(killed, vec![true], "one session holds the lock");
        assert!(!lead.still_leader().await, "a knows at once");
        assert!(b.try_lead().await.unwrap().is_some(), "b leads right away");
        assert!(!lead.still_leader().await, "a never leads again");
    }

    #[tokio::test]
    async fn the_schema_refuses_illegal_transitions() {
        let db = fresh_postgres_db().await;
        let s = PgStore::connect(db.url(), 2).await.unwrap();
        sqlx::query("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't')")
            .execute(s.pool())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO batches (id, tenant_id, name, model, priority, manifest, job_count)
                     SELECT gen_random_uuid(), id, 'b', 'm', 0, '', 1 FROM tenants",
        )
        .execute(s.pool())
        .await
        .unwrap();
        sqlx::query("INSERT INTO jobs (id, batch_id, tenant_id, model, priority, key, params, max_attempts)
                     SELECT gen_random_uuid(), b.id, b.tenant_id, 'm', 0, 'k', '{}', 1 FROM batches b").execute(s.pool()).await.unwrap();
        // pending -> succeeded skips running: the trigger refuses it.
        let e = sqlx::query("UPDATE jobs SET state = 'succeeded', finished_at = now(), object_key = 'k', sha256 = repeat('a', 64)")
            .execute(s.pool()).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot move from pending to succeeded"),
            "{e}"
        );
        // cancelled without finished_at breaks the CHECK.
        let e = sqlx::query("UPDATE jobs SET state = 'cancelled'")
            .execute(s.pool())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("finished_iff_final"), "{e}");
        // running without a lease breaks the CHECK.
        let e = sqlx::query("UPDATE jobs SET state = 'running', started_at = now(), attempt = 1")
            .execute(s.pool())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("lease_iff_running"), "{e}");
    }

    /// A key registered by a scheduler older than migration 0005 (or an old replica during a
    /// rolling update) has no prefix: it is listed and revoked by `sha256:` and its hash's first
    /// 8 digits.
    #[tokio::test]
    async fn keys_of_older_schedulers_are_named_by_their_hash() {
        use pixelfarm_core::{JobStore, hash_api_key};
        let db = fresh_postgres_db().await;
        let s = PgStore::connect(db.url(), 2).await.unwrap();
        let t = s.create_tenant("a", 1).await.unwrap();
        let h = hash_api_key("from-an-old-scheduler");
        sqlx::query("INSERT INTO api_keys (key_sha256, tenant_id) VALUES ($1, $2)")
            .bind(&h)
            .bind(t.as_uuid())
            .execute(s.pool())
            .await
            .unwrap();
        let name = format!("sha256:{}", &h[..8]);
        let listed = s.api_keys(t).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].prefix, name);
        assert_eq!(s.tenant_by_key(&h).await.unwrap(), Some(t));
        assert_eq!(s.revoke_api_keys(t, &name).await.unwrap(), 1);
        assert_eq!(s.tenant_by_key(&h).await.unwrap(), None);
    }

    /// The change feed survives losing its connection: its subscribers are told `Missed` once it
    /// listens again, and hear of later changes.
    #[tokio::test]
    async fn batch_changes_reconnect_after_the_session_is_cut() {
        use futures::StreamExt;
        use pixelfarm_core::{BatchChange, JobStore, parse_manifest};
        use std::time::Duration;
        // A hang guard only, not a timing the feed must meet.
        const HANG_GUARD: Duration = Duration::from_secs(60);
        let db = fresh_postgres_db().await;
        let s = PgStore::connect(db.url(), 2).await.unwrap();
        let t = s.create_tenant("t", 1).await.unwrap();
        let spec = parse_manifest(
            "name: b\nmodel: m\ndefaults: {width: 16, height: 16, steps: 2}\nprompt: p\nseeds: {base: 1, count: 2}\n",
        )
        .unwrap();
        let b = s.submit(t, &spec, 2).await.unwrap().batch_id;
        let mut changes = s.batch_changes().await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(s.pool())
        .await
        .unwrap();
        assert_eq!(killed, vec![true], "one session listens");
        let next = tokio::time::timeout(HANG_GUARD, changes.next()).await;
        assert_eq!(next.expect("hang guard"), Some(BatchChange::Missed));
        let job = s.jobs(t, b, None, 1).await.unwrap()[0].id;
        s.claim(job, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let next = tokio::time::timeout(HANG_GUARD, changes.next()).await;
        assert_eq!(next.expect("hang guard"), Some(BatchChange::Batch(b)));
    }
}
