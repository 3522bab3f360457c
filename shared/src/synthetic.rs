//! Synthetic events for tests and benchmarks: the agent's `synthetic` sensor makes them and
//! the store benchmark inserts the very same rows, so both measure the same data.

use crate::proto::{ProcessAction, ProcessEvent, event};

/// The kind of synthetic event number `index`: a process start whose `pid` is `index`.
pub fn kind(index: u64) -> event::Kind {
    event::Kind::Process(ProcessEvent {
        action: ProcessAction::Start as i32,
        pid: index as u32,
        ppid: 1,
        name: "synthetic".into(),
        exe: "/usr/bin/synthetic".into(),
        cmdline: vec![
            "/usr/bin/synthetic".into(),
            "--index".into(),
            index.to_string(),
        ],
        cwd: "/".into(),
        uid: 1000,
        user: "lindi-bench".into(),
        start_time_s: 1_767_225_600 + index / 1000,
        ..Default::default()
    })
}
