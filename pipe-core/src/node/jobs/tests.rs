//! The job store on a real disk: durable across reopening, one process per
//! store, queues in submission order, idempotency, group commits, and
//! clear errors for a corrupt or foreign store.

#![allow(clippy::unwrap_used)]

use super::*;

fn request(noun: &str) -> JobRequest {
    JobRequest {
        verb: "post".into(),
        noun: noun.into(),
        args: vec!["a b".into()],
        query: "x=1".into(),
        content_type: "text/plain".into(),
        headers: vec![("x-trace".into(), b"t1".to_vec())],
        timeout_ms: 30_000,
    }
}

fn job(peer: &str, noun: &str) -> NewJob {
    NewJob {
        peer: peer.into(),
        handler: format!("post_{noun}"),
        request: request(noun),
        body: format!("body of {noun}").into_bytes(),
        expires_in_ms: 60_000,
        notify: None,
        idempotency_key: None,
        at_most_once: false,
    }
}

async fn created(store: &JobStore, new: NewJob) -> JobRecord {
    match store.submit(new).await.unwrap() {
        Submitted::Created(job) => job,
        other => panic!("not created: {other:?}"),
    }
}

/// The ids of `peer`'s queue, first to be delivered first (at most `limit`).
fn queued_ids(store: &JobStore, peer: &str, limit: usize) -> Vec<String> {
    let queue = store.queue(peer, limit).unwrap();
    queue.into_iter().map(|job| job.id).collect()
}

/// Many jobs land in the same millisecond: their ids still sort in the
/// order they were submitted (the listing, newest first, and the purge
/// walk the store in id order). With only random bits after the
/// millisecond, 200 jobs submitted at once came out of order every time.
#[tokio::test]
async fn ids_sort_by_submission_within_one_millisecond() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 1_000).unwrap();
    // Submitted at once, they share commits and so milliseconds.
    let submitted = (0..200).map(|i| created(&store, job("branch", &format!("n{i}"))));
    futures_util::future::join_all(submitted).await;
    // The queue holds them in submission order.
    let ids = queued_ids(&store, "branch", 1_000);
    assert_eq!(ids.len(), 200);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids out of submission order");
    let same_ms = ids.windows(2).filter(|pair| pair[0][..12] == pair[1][..12]);
    assert!(same_ms.count() > 0, "no two jobs shared a millisecond");
}

#[tokio::test]
async fn jobs_survive_reopening_and_queue_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 100).unwrap();
    let first = created(&store, job("branch", "one")).await;
    let second = created(&store, job("branch", "two")).await;
    let other = created(&store, job("hq", "three")).await;
    assert!(first.id < second.id, "ids sort by creation");
    store.close();

    let store = JobStore::open(dir.path(), 100).unwrap();
    let back = store.get(&first.id).unwrap().unwrap();
    assert_eq!(back, first);
    assert_eq!(back.state, JobState::Queued);
    assert_eq!(store.request_body(&first.id).unwrap(), b"body of one");
    let queue = queued_ids(&store, "branch", 10);
    assert_eq!(queue, vec![first.id.clone(), second.id.clone()]);
    assert_eq!(store.queue_len("branch").unwrap(), 2);
    assert_eq!(store.queue("hq", 10).unwrap()[0].id, other.id);
    assert!(store.get("nothing").unwrap().is_none());
}

#[tokio::test]
async fn a_job_moves_through_its_states_and_leaves_the_queue_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 100).unwrap();
    let job = created(&store, job("branch", "one")).await;
    let delivered = store
        .advance(&job.id, JobState::Delivered, |job| job.attempts += 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (delivered.state, delivered.attempts),
        (JobState::Delivered, 1)
    );
    let result = JobResult {
        http_status: 200,
        return_code: 0,
        content_type: "application/json".into(),
        headers: Vec::new(),
        body_file: None,
    };
    let done = store
        .finish(
            &job.id,
            JobState::Succeeded,
            result.clone(),
            b"{\"ok\":true}".to_vec(),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(result));
    assert_eq!(store.result_body(&job.id).unwrap(), b"{\"ok\":true}");
    assert!(
        store.request_body(&job.id).unwrap().is_empty(),
        "kept past its end"
    );
    assert!(store.queue("branch", 10).unwrap().is_empty());
    assert_eq!(store.queue_len("branch").unwrap(), 0);
    // An end is final.
    let refused = store
        .advance(&job.id, JobState::Cancelled, |_| {})
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(Refused::State {
            from: JobState::Succeeded
        })
    );
    assert_eq!(
        store
            .advance("nothing", JobState::Cancelled, |_| {})
            .await
            .unwrap(),
        Err(Refused::Unknown)
    );
    let counts = store.counts().unwrap();
    assert!(counts.contains(&(JobState::Succeeded, 1)), "{counts:?}");
    assert!(counts.contains(&(JobState::Queued, 0)), "{counts:?}");
    assert!(counts.contains(&(JobState::Delivered, 0)), "{counts:?}");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_job_and_a_full_queue_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 2).unwrap();
    let keyed = NewJob {
        idempotency_key: Some("order-17".into()),
        ..job("branch", "one")
    };
    let first = created(&store, keyed.clone()).await;
    assert_eq!(
        store.submit(keyed).await.unwrap(),
        Submitted::Existing(first.clone())
    );
    created(&store, job("branch", "two")).await;
    assert_eq!(
        store.submit(job("branch", "three")).await.unwrap(),
        Submitted::QueueFull { queued: 2 }
    );
    // Another peer's queue is its own.
    created(&store, job("hq", "four")).await;
    // A job that ends makes room.
    store
        .advance(&first.id, JobState::Cancelled, |_| {})
        .await
        .unwrap()
        .unwrap();
    created(&store, job("branch", "five")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_submissions_shares_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 10_000).unwrap();
    let before = store.commits();
    let submissions: Vec<_> = (0..1000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { created(&store, job("branch", &format!("n{i}"))).await })
        })
        .collect();
    for submission in submissions {
        submission.await.unwrap();
    }
    let commits = store.commits() - before;
    assert_eq!(store.queue_len("branch").unwrap(), 1000);
    assert!(commits < 500, "{commits} commits for 1000 jobs");
    let listed = store.list(None, Some("branch"), None, 10).unwrap();
    assert_eq!(listed.len(), 10);
    assert!(
        listed.windows(2).all(|pair| pair[0].id > pair[1].id),
        "newest first"
    );
    let next = store.list(None, None, Some(&listed[9].id), 5).unwrap();
    assert!(next.iter().all(|job| job.id < listed[9].id));
}

#[tokio::test]
async fn a_second_opener_a_corrupt_file_and_a_foreign_schema_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 10).unwrap();
    let error = JobStore::open(dir.path(), 10).unwrap_err();
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("another process"), "{error}");
    store.close();

    // Another schema.
    {
        let db = redb::Database::create(dir.path().join(STORE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("schema", 99).unwrap();
        txn.commit().unwrap();
    }
    let error = JobStore::open(dir.path(), 10).unwrap_err();
    assert!(
        matches!(error, StoreError::Schema { found: 99, .. }),
        "{error}"
    );

    // Garbage where the store should be.
    std::fs::write(dir.path().join(STORE_FILE), vec![0x5a; 64 * 1024]).unwrap();
    let error = JobStore::open(dir.path(), 10).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
    assert!(error.to_string().contains(STORE_FILE), "{error}");
}

#[tokio::test]
async fn ended_jobs_past_retention_are_forgotten_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 100).unwrap();
    let keyed = NewJob {
        idempotency_key: Some("k".into()),
        ..job("branch", "one")
    };
    let ended = created(&store, keyed.clone()).await;
    let waiting = created(&store, job("branch", "two")).await;
    store
        .advance(&ended.id, JobState::Cancelled, |_| {})
        .await
        .unwrap()
        .unwrap();
    // Nothing ended before a cutoff in the past.
    assert_eq!(store.purge(ended.created_ms).await.unwrap(), 0);
    let later = store.get(&ended.id).unwrap().unwrap().updated_ms + 1;
    assert_eq!(store.purge(later).await.unwrap(), 1);
    assert!(store.get(&ended.id).unwrap().is_none());
    assert!(
        store.get(&waiting.id).unwrap().is_some(),
        "a queued job stays"
    );
    assert!(store.counts().unwrap().contains(&(JobState::Cancelled, 0)));
    // Its key is free again: a new job.
    let again = created(&store, keyed).await;
    assert_ne!(again.id, ended.id);
}

#[tokio::test]
async fn a_purge_of_many_jobs_goes_in_several_transactions_and_misses_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(dir.path(), 1_000).unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let job = created(&store, job("branch", &format!("n{i}"))).await;
        store
            .advance(&job.id, JobState::Cancelled, |_| {})
            .await
            .unwrap()
            .unwrap();
        ids.push(job.id);
    }
    let kept = created(&store, job("branch", "kept")).await;
    let commits = store.commits();
    assert_eq!(store.purge(u64::MAX).await.unwrap(), 40);
    assert!(store.commits() - commits >= 3, "40 jobs in batches of 16");
    for id in &ids {
        assert_eq!(store.get(id).unwrap(), None);
    }
    assert_eq!(
        store.get(&kept.id).unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn a_kept_result_file_streams_whole_and_a_missing_one_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let stream = result_files::file_stream(path, content.len() as u64);
    assert_eq!(stream.length(), Some(content.len() as u64));
    assert_eq!(stream.collect(1 << 20).await.unwrap(), content);

    let missing = dir.path().join("gone");
    let error = result_files::file_stream(missing.clone(), 10)
        .collect(1 << 20)
        .await
        .unwrap_err();
    let crate::wire::body::BodyError::Aborted(message) = error else {
        panic!("{error:?}");
    };
    assert!(
        message.contains("cannot read the result file") && message.contains("gone"),
        "{message}"
    );
}
