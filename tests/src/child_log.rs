//! What a child process prints, collected line by line as it comes, so a
//! test can wait for a line and show everything when it fails.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wait::try_wait_until;

/// The lines of a child's standard output and error, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct ChildLog(Arc<Mutex<String>>);

impl ChildLog {
    /// Starts collecting the piped stdout and stderr `child` was spawned
    /// with (each taken from it; one not piped is skipped).
    pub fn collect(child: &mut Child) -> Self {
        let log = Self::default();
        let streams = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let into = Arc::clone(&log.0);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut text = into.lock().unwrap_or_else(|e| e.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        log
    }

    /// Everything collected so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until some line holds `needle`; panics with the whole log at the deadline.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let printed = try_wait_until(Instant::now() + timeout, || {
            self.text().contains(needle).then_some(())
        });
        assert!(
            printed.is_some(),
            "never printed `{needle}`:\n{}",
            self.text()
        );
    }
}
