//! The process-wide list of throwaway servers that are still alive, and the Ctrl-C / SIGTERM
//! handler that tears them down before the process exits with status 130.
//!
//! Every backend registers a [`Teardown`] *before* it creates anything (a container label, a
//! temp dir), so an interrupt in the middle of provisioning still finds it. Teardowns are
//! idempotent: the signal handler and a concurrent `Drop` may both call one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

/// Something that can be torn down from any thread, more than once.
pub(crate) trait Teardown: Send + Sync {
    /// What it is, for the interrupt message (no secrets).
    fn describe(&self) -> String;
    /// Stops and removes it; a second call does nothing.
    fn teardown(&self);
}

type Entries = BTreeMap<u64, Arc<dyn Teardown>>;

static ENTRIES: Mutex<Entries> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static HANDLER: Once = Once::new();
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether an interrupt is being handled (the process is about to exit with status 130).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn entries() -> MutexGuard<'static, Entries> {
    // A panic while the lock was held leaves the map itself consistent (inserts and removes are
    // single operations), so a poisoned lock is still usable.
    ENTRIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a teardown registered; dropping it unregisters (without tearing down).
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        entries().remove(&self.id);
    }
}

/// Registers `item` for interrupt-time teardown and makes sure the handler is installed.
pub(crate) fn register(item: Arc<dyn Teardown>) -> Registration {
    install_interrupt_handler();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    entries().insert(id, item);
    Registration { id }
}

/// Tears down every throwaway database of this process that is still alive (newest first).
/// Call it from your own signal handler if you install one instead of ours.
pub fn teardown_all() {
    let items: Vec<Arc<dyn Teardown>> = entries().values().rev().cloned().collect();
    for item in items {
        item.teardown();
    }
}

/// Installs the Ctrl-C / SIGTERM / SIGHUP handler (once per process): tear down what is alive,
/// then exit with status 130. Provisioning calls this itself; when another handler is already
/// installed, ours is not, and that handler should call [`teardown_all`].
pub fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        let result = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            let alive: Vec<String> = entries().values().map(|t| t.describe()).collect();
            if !alive.is_empty() {
                eprintln!(
                    "interrupted: removing {} throwaway database(s): {}",
                    alive.len(),
                    alive.join(", ")
                );
            }
            teardown_all();
            std::process::exit(130);
        });
        if let Err(e) = result {
            tracing::warn!(
                error = %e,
                "could not install the interrupt handler; call preflight_probes::db::teardown_all() from yours"
            );
        }
    });
}
