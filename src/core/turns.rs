//! Waiting for a sandbox someone else is making: the per-name turn lock that concurrent `ensure`s in one process
//! share, and the backoff between looks at a sandbox that exists but is not ready yet. Used by every backend's
//! `ensure`, so "20 concurrent ensures make one sandbox" holds on each.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

/// First and longest pause between looks: short at first (a create that is nearly done), then at most once a
/// second (a create pulling a template for minutes).
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The turn lock for `name` on the daemon at `daemon`, shared by every client in this process: concurrent
/// ensures wait for the one in progress instead of racing it with creates. Entries nobody holds or waits for are
/// dropped as new ones are made.
pub fn turn(daemon: &str, name: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Turns = HashMap<(String, String), Weak<tokio::sync::Mutex<()>>>;
    static TURNS: LazyLock<std::sync::Mutex<Turns>> = LazyLock::new(Default::default);
    let mut turns = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    turns.retain(|_, w| w.strong_count() > 0);
    let key = (daemon.to_string(), name.to_string());
    if let Some(t) = turns.get(&key).and_then(Weak::upgrade) {
        return t;
    }
    let t = Arc::new(tokio::sync::Mutex::new(()));
    turns.insert(key, Arc::downgrade(&t));
    t
}

/// Doubling pauses from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`]; the caller's deadline bounds the whole wait.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_FIRST)
    }
}

impl Backoff {
    /// Sleep for the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    fn next_pause(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_daemon_and_name_while_anyone_holds_it() {
        let a = turn("/s", "dev");
        assert!(Arc::ptr_eq(&a, &turn("/s", "dev")));
        assert!(!Arc::ptr_eq(&a, &turn("/s", "other")));
        assert!(!Arc::ptr_eq(&a, &turn("/t", "dev")));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..8).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
    }
}
