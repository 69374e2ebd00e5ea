//! The signals that stop a long-running command (Ctrl-C, SIGTERM).

use anyhow::Context as _;

/// Why a command was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Ctrl-C (SIGINT): exit 130 after a clean close.
    Interrupt,
    /// SIGTERM: exit 0 after a clean close (a service manager stopping us).
    Terminate,
}

/// Listeners for the signals that stop a long-running command: installed before the command
/// announces that it is ready, so a signal sent right after the ready line is never lost (the
/// default action would kill the process without a clean shutdown).
#[derive(Debug)]
pub(crate) struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the listeners now.
    pub(crate) fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves when the process is asked to stop. Cancel-safe: it may be polled again in a
    /// `select!` loop.
    pub(crate) async fn wait(&mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Stop::Interrupt,
                _ = self.terminate.recv() => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            // Without a listener Ctrl-C cannot be told apart from a failure to listen; treat
            // both as an interrupt.
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}
