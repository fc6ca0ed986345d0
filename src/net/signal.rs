//! Graceful shutdown on Ctrl-C and SIGTERM, without a signal handler.
//!
//! [`ShutdownSignal::install`] blocks SIGINT and SIGTERM in the calling thread and reads them
//! from a `signalfd` instead. A blocked signal mask is inherited by the threads a thread
//! starts, so call it **first in `main`, before building a [`System`](crate::System)** or
//! starting any other thread: then no thread of the process is interrupted by those signals,
//! and the main thread learns of them when it asks ([`ShutdownSignal::wait_timeout`],
//! [`ShutdownSignal::wait_until`], [`ShutdownSignal::received`]). A thread started before the
//! call still has the default action (the process ends at once) if the kernel picks it.
//!
//! Once the program has stopped waiting, it runs its own graceful shutdown
//! ([`System::shutdown`](crate::System::shutdown)) and exits normally.
//!
//! ```no_run
//! use kendynet::signal::ShutdownSignal;
//! use kendynet::System;
//! use std::time::Duration;
//!
//! fn main() -> std::io::Result<()> {
//!     let signal = ShutdownSignal::install()?; // before any thread starts
//!     let system = System::builder().build()?;
//!     // ... spawn, listen ...
//!     while signal.wait_timeout(Duration::from_secs(1))?.is_none() {
//!         // once a second: print what is going on
//!     }
//!     let report = system.shutdown(Duration::from_secs(5));
//!     println!("stopped: {report:?}");
//!     Ok(())
//! }
//! ```

use super::sys::{SIGINT, SIGTERM, SignalFd};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// A shutdown signal that was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// SIGINT (Ctrl-C in a terminal).
    Interrupt,
    /// SIGTERM (`kill`, a service manager stopping the process).
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

fn signal_of(signo: i32) -> Signal {
    if signo == SIGINT {
        Signal::Interrupt
    } else {
        Signal::Terminate
    }
}

/// SIGINT and SIGTERM, blocked and read from a descriptor. See the [module docs](self).
#[derive(Debug)]
pub struct ShutdownSignal {
    fd: SignalFd,
}

impl ShutdownSignal {
    /// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts from now
    /// on) and opens a descriptor to read them from. Call it before starting threads.
    ///
    /// # Errors
    /// The OS error of changing the signal mask or of `signalfd`.
    pub fn install() -> io::Result<ShutdownSignal> {
        Ok(ShutdownSignal {
            fd: SignalFd::shutdown_signals()?,
        })
    }

    /// Waits up to `timeout` for SIGINT or SIGTERM; `None` if none came.
    ///
    /// # Errors
    /// The OS error of waiting on or reading the descriptor.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<Signal>> {
        Ok(self.fd.wait(Some(timeout))?.map(signal_of))
    }

    /// Waits until `deadline` (`None`: without end) for SIGINT or SIGTERM; `None` if the
    /// deadline passed first.
    ///
    /// # Errors
    /// The OS error of waiting on or reading the descriptor.
    pub fn wait_until(&self, deadline: Option<Instant>) -> io::Result<Option<Signal>> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        Ok(self.fd.wait(timeout)?.map(signal_of))
    }

    /// A signal received since the last look, without waiting.
    ///
    /// # Errors
    /// The OS error of reading the descriptor.
    pub fn received(&self) -> io::Result<Option<Signal>> {
        Ok(self.fd.take()?.map(signal_of))
    }

    /// Sends SIGTERM to this process: whoever waits on a `ShutdownSignal` stops waiting (a
    /// way for one part of a program, or a test, to ask for the graceful shutdown).
    ///
    /// # Errors
    /// The OS error of `kill`.
    pub fn request_shutdown() -> io::Result<()> {
        super::sys::raise_in_process(SIGTERM)
    }
}
