//! The two waits every async shell around a sans-io machine puts in its `select!`: the
//! machine's next deadline, which may be none, and a piece of work that may not be running.
//! One home for both, used by the DHT, connect and listen shells here and by the facade.

use std::future::Future;
use std::time::Instant;

/// Sleeps until `deadline`, or never wakes when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The output of the future in `slot`; never ready while the slot is empty. The caller
/// empties the slot once the output is taken.
pub async fn optional<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(work) => work.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn no_deadline_and_no_work_never_finish() {
        let mut empty: Option<std::future::Ready<u8>> = None;
        tokio::select! {
            () = sleep_until(None) => panic!("slept without a deadline"),
            _ = optional(&mut empty) => panic!("empty slot finished"),
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_and_a_running_future_finish() {
        sleep_until(Some(Instant::now() + Duration::from_secs(5))).await;
        let mut work = Some(std::future::ready(7u8));
        assert_eq!(optional(&mut work).await, 7);
    }
}
