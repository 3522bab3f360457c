//! The one thread that may run at real-time priority: the process connector's reader.
//!
//! A short-lived process is gone within a millisecond of its exec, so the reader must run as
//! soon as the kernel's message arrives. Two ways to get there:
//!
//! - **Under systemd** the unit sets `CPUSchedulingPolicy=fifo`, `CPUSchedulingPriority=1`
//!   and `CPUSchedulingResetOnFork=yes`: systemd, still root, puts the main thread at the
//!   lowest real-time priority before it drops privileges, and every thread the main thread
//!   makes starts at normal priority. The agent itself never calls `sched_setscheduler`, so
//!   the unit can forbid it (`RestrictRealtime=yes`, `SystemCallFilter=~@resources`). The
//!   main thread then keeps only this slot: [`serve_on_main_thread`] runs the agent on a
//!   second thread and the reader jobs on the main one.
//! - **Elsewhere** (a shell, a test) the reader gets a thread of its own and raises itself if
//!   the process may ([`raise_this_thread`]).

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// Where real-time jobs go when the main thread serves them.
static MAIN_THREAD: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Whether the calling thread runs under a real-time policy (FIFO or round-robin).
pub fn this_thread_is_realtime() -> bool {
    // SAFETY: sched_getscheduler on the calling thread has no preconditions.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy >= 0 && {
        let p = policy & !libc::SCHED_RESET_ON_FORK;
        p == libc::SCHED_FIFO || p == libc::SCHED_RR
    }
}

/// Run `agent` and return what it returns. When this (main) thread was started at real-time
/// priority, `agent` runs on a thread of its own (at normal priority, reset on creation) and
/// this thread serves [`spawn`]'s jobs one at a time until `agent` is done.
pub fn serve_on_main_thread<T: Send + 'static>(
    agent: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    if !this_thread_is_realtime() {
        return Ok(agent());
    }
    let (jobs, queue) = mpsc::channel::<Job>();
    *MAIN_THREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(jobs);
    /// Closes the queue when the agent returns or unwinds, so that the main thread stops
    /// serving (the static holds the only sender).
    struct CloseQueue;
    impl Drop for CloseQueue {
        fn drop(&mut self) {
            MAIN_THREAD.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
    let runner = std::thread::Builder::new()
        .name("lindi-agent-main".into())
        .spawn(move || {
            let _close = CloseQueue;
            // Started at real-time priority without reset-on-fork (chrt without -R): step
            // down, which needs no privilege, so that only the reader keeps it.
            if this_thread_is_realtime() {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: sched_setscheduler on our own thread with valid arguments.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
            }
            agent()
        });
    let runner = match runner {
        Ok(r) => r,
        Err(e) => {
            drop(CloseQueue);
            return Err(e);
        }
    };
    while let Ok(job) = queue.recv() {
        job();
    }
    runner
        .join()
        .map_err(|_| std::io::Error::other("the agent thread panicked"))
}

/// A job started with [`spawn`].
pub struct Handle {
    done: Receiver<()>,
}

impl Handle {
    /// Wait until the job has returned (or was dropped unrun).
    pub fn join(self) {
        let _ = self.done.recv();
    }
}

/// Where a job started with [`spawn`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the main thread, which systemd started at real-time priority.
    MainThread,
    /// On a thread of its own (which may raise itself: [`raise_this_thread`]).
    OwnThread,
}

/// Run `job` on the real-time main thread when there is one, else on a new thread named
/// `name`.
pub fn spawn(
    name: &str,
    job: impl FnOnce() + Send + 'static,
) -> std::io::Result<(Handle, Placement)> {
    let (done_tx, done) = mpsc::channel();
    let wrapped: Job = Box::new(move || {
        job();
        let _ = done_tx.send(());
    });
    let wrapped = {
        let main = MAIN_THREAD.lock().unwrap_or_else(|e| e.into_inner());
        match main.as_ref() {
            Some(queue) => match queue.send(wrapped) {
                Ok(()) => return Ok((Handle { done }, Placement::MainThread)),
                Err(mpsc::SendError(job)) => job,
            },
            None => wrapped,
        }
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(wrapped)?;
    Ok((Handle { done }, Placement::OwnThread))
}

/// Outside systemd: ask for the lowest real-time priority for the calling thread, else a
/// raised nice value. Both need CAP_SYS_NICE or a raised RLIMIT_RTPRIO; without them (or
/// where the unit's system call filter forbids them) this does nothing. Returns what it got.
pub fn raise_this_thread() -> &'static str {
    if this_thread_is_realtime() {
        return "real-time (given at start)";
    }
    // SAFETY: sched_setscheduler and setpriority on our own thread with valid arguments.
    unsafe {
        let param = libc::sched_param { sched_priority: 1 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 {
            return "real-time";
        }
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, -15) == 0 {
            return "nice -15";
        }
    }
    "normal"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_real_time_main_thread_a_job_gets_a_thread_of_its_own() {
        // The test harness's threads are not real-time: serve_on_main_thread just runs.
        assert_eq!(serve_on_main_thread(|| 7).unwrap(), 7);
        let (tx, rx) = mpsc::channel();
        let (handle, placement) = spawn("lindi-test-job", move || {
            let name = std::thread::current().name().map(str::to_string);
            tx.send(name).unwrap();
        })
        .unwrap();
        assert_eq!(placement, Placement::OwnThread);
        handle.join();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("lindi-test-job"));
    }
}
