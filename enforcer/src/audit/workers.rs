//! [`Workers`]: an ordered pool of threads for the verifier's per-record work.
//!
//! Checking a chain is sequential only in its links (each record's `prev_hash` against the
//! previous record's `hash`); reading a record back into its canonical payload and hashing it is
//! independent per record and is most of the cost. The verifier reads batches of raw records,
//! hands them to these threads round-robin and takes the prepared batches back in the order it
//! sent them, so the chain check sees records in source order exactly as a single thread would.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

/// How many worker threads the verifier uses: the machine's parallelism, at most 4 (more only
/// contend with the reader and the database), and none on a single core.
pub(crate) fn verify_threads() -> usize {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n <= 1 {
        0
    } else {
        n.min(4)
    }
}

/// A fixed set of threads applying one function to batches, results returned in submit order.
/// With zero threads it applies the function inline on [`submit`](Self::submit).
pub(crate) struct Workers<I: Send + 'static, O: Send + 'static> {
    job_senders: Vec<Sender<I>>,
    result_receivers: Vec<Receiver<O>>,
    /// Results computed inline (zero threads).
    inline: VecDeque<O>,
    work: fn(I) -> O,
    submitted: usize,
    received: usize,
    handles: Vec<Option<JoinHandle<()>>>,
}

impl<I: Send + 'static, O: Send + 'static> Workers<I, O> {
    pub(crate) fn new(threads: usize, work: fn(I) -> O) -> Self {
        let mut job_senders = Vec::with_capacity(threads);
        let mut result_receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (job_tx, job_rx) = channel::<I>();
            let (result_tx, result_rx) = channel::<O>();
            let spawned = std::thread::Builder::new()
                .name(format!("audit-verify-{i}"))
                .spawn(move || {
                    while let Ok(job) = job_rx.recv() {
                        if result_tx.send(work(job)).is_err() {
                            // The verifier stopped reading (it found a break): stop too.
                            break;
                        }
                    }
                });
            match spawned {
                Ok(handle) => {
                    job_senders.push(job_tx);
                    result_receivers.push(result_rx);
                    handles.push(Some(handle));
                }
                // No thread to be had: the ones started (maybe none) do all the work.
                Err(_) => break,
            }
        }
        Self {
            job_senders,
            result_receivers,
            inline: VecDeque::new(),
            work,
            submitted: 0,
            received: 0,
            handles,
        }
    }

    /// Batches submitted whose results have not been taken yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.submitted - self.received
    }

    /// How many batches to keep in flight so every thread stays busy.
    pub(crate) fn depth(&self) -> usize {
        (self.job_senders.len() * 2).max(1)
    }

    pub(crate) fn submit(&mut self, job: I) {
        if self.job_senders.is_empty() {
            self.inline.push_back((self.work)(job));
            self.submitted += 1;
            return;
        }
        let slot = self.submitted % self.job_senders.len();
        if let Err(e) = self.job_senders[slot].send(job) {
            drop(e);
            self.lost(slot);
        }
        self.submitted += 1;
    }

    /// The result of the oldest batch not yet taken (blocking until it is ready), or `None` when
    /// every submitted batch has been taken.
    pub(crate) fn next(&mut self) -> Option<O> {
        if self.received == self.submitted {
            return None;
        }
        let out = if self.job_senders.is_empty() {
            self.inline.pop_front()
        } else {
            let slot = self.received % self.result_receivers.len();
            match self.result_receivers[slot].recv() {
                Ok(out) => Some(out),
                Err(_) => self.lost(slot),
            }
        };
        self.received += 1;
        out
    }

    /// A thread is gone, which only a panic in the work can cause: re-raise that panic here, as
    /// the same work done inline would have.
    fn lost(&mut self, slot: usize) -> ! {
        if let Some(handle) = self.handles[slot].take() {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        panic!("audit verify worker thread {slot} stopped");
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for Workers<I, O> {
    fn drop(&mut self) {
        // Closing the job channels ends each thread's loop; closing the result channels ends a
        // thread blocked on sending a result nobody will read.
        self.job_senders.clear();
        self.result_receivers.clear();
        for handle in self.handles.drain(..).flatten() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(v: Vec<u64>) -> Vec<u64> {
        v.into_iter().map(|x| x * x).collect()
    }

    #[test]
    fn results_come_back_in_submit_order() {
        for threads in [0, 1, 3] {
            let mut w = Workers::new(threads, square);
            let mut out = Vec::new();
            for batch in 0..20u64 {
                w.submit((batch * 10..batch * 10 + 10).collect());
                while w.in_flight() >= w.depth() {
                    out.extend(w.next().unwrap());
                }
            }
            while let Some(r) = w.next() {
                out.extend(r);
            }
            let want: Vec<u64> = (0..200u64).map(|x| x * x).collect();
            assert_eq!(out, want, "{threads} threads");
        }
    }

    #[test]
    fn dropping_with_batches_in_flight_does_not_hang() {
        let mut w = Workers::new(2, square);
        for batch in 0..10u64 {
            w.submit(vec![batch; 1000]);
        }
        assert!(w.next().is_some());
        drop(w);
    }
}
