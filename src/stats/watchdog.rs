//! systemd's watchdog: `WATCHDOG=1` every third of `WATCHDOG_USEC`, sent only while the health
//! check (`health`, the one `/health` answers with) passes. A stuck worker or HTTP thread
//! stops the pings, and so does a stuck stats thread (this task runs on its runtime); past
//! `WatchdogSec=` systemd kills the process and restarts it. A ping never waits on the
//! manager (`notify::ping_watchdog`): this runtime also answers `/health`.

use std::time::Duration;

use super::counters::Sources;
use crate::notify;

/// Pings every `period` while the tracker is healthy; runs until its runtime is dropped.
pub(super) async fn keep(period: Duration, sources: Sources, stale_after: Duration) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    let mut failed = false;
    loop {
        every.tick().await;
        match super::health(&sources, stale_after) {
            Ok(_) => {
                if withheld {
                    tracing::info!("healthy again: watchdog pings resume");
                    withheld = false;
                }
                match notify::ping_watchdog() {
                    Ok(_) => failed = false,
                    Err(e) if !failed => {
                        failed = true;
                        tracing::warn!(error = %e, "cannot send the watchdog ping (NOTIFY_SOCKET)");
                    }
                    Err(_) => {}
                }
            }
            Err(why) => {
                if !withheld {
                    tracing::error!(
                        "withholding the watchdog ping; systemd restarts hayate if this lasts \
                         WatchdogSec: {}",
                        why.trim_end()
                    );
                    withheld = true;
                }
            }
        }
    }
}
