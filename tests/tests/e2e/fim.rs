//! File integrity monitoring end to end: real-time create, modify, attribute change, rename
//! and delete with hashes before and after; one event per burst of writes; new directories;
//! changes made while the agent was down; and never a word about its own state directory.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lindi_shared::proto::FileEvent;
use lindi_tests::{Agent, Collector, FAST_AGENT, wait_until};

/// SHA-256 hex (the certificate fingerprint helper is exactly that).
fn sha256(data: &[u8]) -> String {
    lindi_shared::pki::fingerprint(data)
}

fn find<'a>(events: &'a [FileEvent], action: &str, path: &str) -> Option<&'a FileEvent> {
    events.iter().find(|e| e.action == action && e.path == path)
}

#[test]
fn file_changes_are_reported_in_real_time_and_across_restarts() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    // Watch the agent's whole temporary directory: it holds the agent's own state directory,
    // which must never be reported.
    let root = a.tmp.path().to_path_buf();
    let watched = root.join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::write(watched.join("existing.conf"), b"v1").unwrap();
    let config = FAST_AGENT.replace(
        "[sensors.fim]\nenabled = false",
        &format!(
            "[sensors.fim]\nenabled = true\ndebounce_ms = 300\nexclude = [\"**/*.log\"]\n[[sensors.fim.paths]]\npath = {:?}\n",
            root.display().to_string()
        ),
    );
    a.configure(&config);
    a.start();
    let agent_id = a.agent_id.clone();
    let events = || c.file_events(&agent_id);
    let p = |name: &str| watched.join(name).display().to_string();

    // The watcher is ready once a probe file is reported.
    let probe = watched.join("probe");
    let ready = wait_until(Duration::from_secs(30), || {
        std::fs::write(&probe, b"probe").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        events().iter().any(|e| e.path == p("probe"))
    });
    assert!(
        ready,
        "the FIM sensor never reported; agent log:\n{}",
        a.log_text()
    );

    std::fs::write(watched.join("a.txt"), b"hello").unwrap();
    assert!(wait_until(Duration::from_secs(10), || find(
        &events(),
        "created",
        &p("a.txt")
    )
    .is_some()));
    let created = find(&events(), "created", &p("a.txt")).unwrap().clone();
    assert_eq!(created.after.as_ref().unwrap().sha256, sha256(b"hello"));
    assert!(created.before.is_none());
    assert_eq!(created.detected_by, "realtime");

    // A burst of writes is one event.
    for i in 0..50 {
        std::fs::write(watched.join("a.txt"), format!("hello {i}")).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || find(
        &events(),
        "modified",
        &p("a.txt")
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(800));
    let modified: Vec<FileEvent> = events()
        .into_iter()
        .filter(|e| e.action == "modified" && e.path == p("a.txt"))
        .collect();
    assert_eq!(modified.len(), 1, "one event for a burst: {modified:?}");
    assert_eq!(
        modified[0].before.as_ref().unwrap().sha256,
        sha256(b"hello")
    );
    assert_eq!(
        modified[0].after.as_ref().unwrap().sha256,
        sha256(b"hello 49")
    );

    std::fs::set_permissions(
        watched.join("a.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || find(
        &events(),
        "attributes",
        &p("a.txt")
    )
    .is_some()));
    let attr = find(&events(), "attributes", &p("a.txt")).unwrap().clone();
    assert_eq!(attr.after.as_ref().unwrap().mode & 0o777, 0o600);
    assert_ne!(attr.before.as_ref().unwrap().mode & 0o777, 0o600);

    std::fs::rename(watched.join("a.txt"), watched.join("b.txt")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || find(
        &events(),
        "renamed",
        &p("b.txt")
    )
    .is_some()));
    let renamed = find(&events(), "renamed", &p("b.txt")).unwrap().clone();
    assert_eq!(renamed.old_path, p("a.txt"));
    assert_eq!(renamed.after.as_ref().unwrap().sha256, sha256(b"hello 49"));

    std::fs::remove_file(watched.join("b.txt")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || find(
        &events(),
        "deleted",
        &p("b.txt")
    )
    .is_some()));

    // A new directory with a file already inside when the watch is added.
    std::fs::create_dir_all(watched.join("new/deeper")).unwrap();
    std::fs::write(watched.join("new/deeper/inner.sh"), b"#!/bin/sh\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || find(
        &events(),
        "created",
        &p("new/deeper/inner.sh")
    )
    .is_some()));
    // Excluded by glob: never reported.
    std::fs::write(watched.join("noise.log"), b"x").unwrap();

    // Changes while the agent is down are found at start-up.
    a.stop();
    std::fs::write(watched.join("existing.conf"), b"v2").unwrap();
    std::fs::write(watched.join("while-down"), b"new").unwrap();
    std::fs::remove_file(watched.join("probe")).unwrap();
    a.start();
    let startup = wait_until(Duration::from_secs(30), || {
        let ev = events();
        [
            "modified:existing.conf",
            "created:while-down",
            "deleted:probe",
        ]
        .iter()
        .all(|want| {
            let (action, name) = want.split_once(':').unwrap();
            find(&ev, action, &p(name)).is_some_and(|e| e.detected_by == "startup")
        })
    });
    assert!(startup, "changes while down not reported: {:#?}", events());
    let changed = find(&events(), "modified", &p("existing.conf"))
        .unwrap()
        .clone();
    assert_eq!(changed.before.as_ref().unwrap().sha256, sha256(b"v1"));
    assert_eq!(changed.after.as_ref().unwrap().sha256, sha256(b"v2"));

    let all = events();
    assert!(
        find(&all, "created", &p("noise.log")).is_none(),
        "an excluded file was reported"
    );
    let own = a.state_dir.display().to_string();
    assert!(
        all.iter().all(|e| !e.path.starts_with(&own)),
        "the agent reported its own state directory: {:?}",
        all.iter()
            .filter(|e| e.path.starts_with(&own))
            .collect::<Vec<_>>()
    );
    a.stop();
}

#[test]
fn subtrees_without_inotify_watches_fall_back_to_scheduled_scans() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    let watched = a.tmp.path().join("many");
    for d in ["a", "b", "c", "d/e"] {
        std::fs::create_dir_all(watched.join(d)).unwrap();
        std::fs::write(watched.join(d).join("f"), b"1").unwrap();
    }
    // Two watches for six directories: four of them can only be scanned.
    let config = FAST_AGENT.replace(
        "[sensors.fim]\nenabled = false",
        &format!(
            "[sensors.fim]\nenabled = true\ndebounce_ms = 200\nmax_watches = 2\nfallback_rescan_interval_secs = 1\n[[sensors.fim.paths]]\npath = {:?}\n",
            watched.display().to_string()
        ),
    );
    a.configure(&config);
    a.start();
    let agent_id = a.agent_id.clone();
    let events = || c.file_events(&agent_id);
    let p = |name: &str| watched.join(name).display().to_string();
    // Every directory's file changes is reported: by inotify where watched, else by the
    // scheduled scan of the unwatched subtree.
    let all = ["a/f", "b/f", "c/f", "d/e/f"];
    let seen = wait_until(Duration::from_secs(30), || {
        for f in all {
            std::fs::write(watched.join(f), b"2").unwrap();
        }
        std::thread::sleep(Duration::from_millis(1500));
        let ev = events();
        all.iter().all(|f| find(&ev, "modified", &p(f)).is_some())
    });
    assert!(
        seen,
        "not every change was reported: {:#?}\nagent log:\n{}",
        events(),
        a.log_text()
    );
    assert!(
        events().iter().any(|e| e.detected_by == "rescan"),
        "some changes should come from the fallback scans"
    );
    assert!(
        a.log_text().contains("could not be watched"),
        "the unwatched subtree is reported"
    );
    a.stop();
}

#[test]
fn moved_directories_single_file_roots_and_files_that_never_settle() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    let root = a.tmp.path().join("tree");
    let single = a.tmp.path().join("sudoers");
    std::fs::create_dir_all(root.join("cron.d")).unwrap();
    std::fs::write(root.join("cron.d/job1"), b"1").unwrap();
    std::fs::write(root.join("cron.d/job2"), b"2").unwrap();
    std::fs::write(root.join("busy.log"), b"0").unwrap();
    std::fs::write(&single, b"root ALL=(ALL) ALL").unwrap();
    let config = FAST_AGENT.replace(
        "[sensors.fim]\nenabled = false",
        &format!(
            "[sensors.fim]\nenabled = true\ndebounce_ms = 300\n[[sensors.fim.paths]]\npath = {:?}\n[[sensors.fim.paths]]\npath = {:?}\n",
            root.display().to_string(),
            single.display().to_string()
        ),
    );
    a.configure(&config);
    a.start();
    let agent_id = a.agent_id.clone();
    let events = || c.file_events(&agent_id);
    let s = |p: &std::path::Path| p.display().to_string();
    // Ready once a change to the single-file root is seen: it is watched through its directory.
    let ready = wait_until(Duration::from_secs(30), || {
        std::fs::write(
            &single,
            format!("root ALL=(ALL) ALL # {:?}", std::time::Instant::now()),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        find(&events(), "modified", &s(&single)).is_some_and(|e| e.detected_by == "realtime")
    });
    assert!(
        ready,
        "the single-file root was not watched; agent log:\n{}",
        a.log_text()
    );

    // A directory moved out of the monitored tree: each file in it is reported deleted.
    let away = a.tmp.path().join("moved-away");
    std::fs::rename(root.join("cron.d"), &away).unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        let ev = events();
        find(&ev, "deleted", &s(&root.join("cron.d/job1"))).is_some()
            && find(&ev, "deleted", &s(&root.join("cron.d/job2"))).is_some()
    });
    assert!(
        gone,
        "files of a moved directory not reported: {:#?}",
        events()
    );

    // A file written every 100 ms never goes quiet, and is still reported within seconds.
    let busy = root.join("busy.log");
    let start = std::time::Instant::now();
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(8) && !seen {
        std::fs::write(&busy, format!("{:?}", start.elapsed())).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        seen = find(&events(), "modified", &s(&busy)).is_some();
    }
    assert!(seen, "a file that keeps changing was never reported");
    a.stop();
}
