//! Fault injection: make csi-migrate stop dead in the middle of a step, to
//! prove that a resumed run (or `--rollback`) copes with whatever an
//! interrupted run leaves behind.
//!
//! `--stop-after-step N` stops cleanly *between* steps, with the journal up
//! to date. A crash is worse: the process dies right after some write to the
//! API (a PV deleted, a claim recreated, a Pod created) and before the
//! journal records it. [`Fault`] names such a point: the N-th successful
//! write of a step (`delete-flex-pv:1` is just after the Flex PV's DELETE).
//! The binary reads it from [`ENV`] and kills itself with SIGKILL there, as
//! `kill -9` would; the tests use [`Crash::Return`], which makes the run
//! return [`Crashed`] at once and write nothing more, the same thing seen
//! from the API server.

use std::str::FromStr;

use crate::plan::Step;

/// `CSI_MIGRATE_CRASH=<step>[:<n>]`: die after the n-th (default 1st)
/// successful API write of that step, in the first PV that gets there.
pub const ENV: &str = "CSI_MIGRATE_CRASH";

/// How the process "dies" at the fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// SIGKILL to itself: nothing after the write runs, not even destructors
    /// (the shell sees exit status 137).
    Kill,
    /// Return [`Crashed`] from the write, and fail every later write: for
    /// tests, which cannot kill their own process.
    Return,
}

/// Where to crash: after the `write`-th successful API write made while
/// `step` runs (its journal update included, which comes last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub step: Step,
    pub write: usize,
    pub crash: Crash,
}

/// What a run returns when a [`Crash::Return`] fault fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault injected ({ENV}): the run died after write {write} of step {step}")]
pub struct Crashed {
    pub step: &'static str,
    pub write: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{ENV}={0:?}: no step of that name (steps: {names})", names = Step::ALL.map(Step::name).join(", "))]
    UnknownStep(String),
    #[error("{ENV}={0:?}: the write number must be 1 or more")]
    BadWrite(String),
}

impl FromStr for Fault {
    type Err = ParseError;

    /// `delete-flex-pv` or `delete-flex-pv:2`; a step number works too (`6:2`).
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let (step, write) = match text.split_once(':') {
            Some((step, n)) => (
                step,
                n.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ParseError::BadWrite(text.into()))?,
            ),
            None => (text, 1),
        };
        let step = Step::ALL
            .into_iter()
            .find(|s| s.name() == step || step.parse() == Ok(s.number()))
            .ok_or_else(|| ParseError::UnknownStep(text.into()))?;
        Ok(Fault { step, write, crash: Crash::Kill })
    }
}

/// Counts the writes of the step that runs, and fires the fault.
#[derive(Debug, Default)]
pub struct Tracker {
    fault: Option<Fault>,
    step: Option<Step>,
    writes: usize,
    fired: bool,
}

impl Tracker {
    pub fn new(fault: Option<Fault>) -> Self {
        Self { fault, ..Default::default() }
    }

    /// A step starts: its writes count from 0. `None`: no step (rollback).
    pub fn enter(&mut self, step: Option<Step>) {
        self.step = step;
        self.writes = 0;
    }

    /// After every successful write. `Err` once the fault fired (with
    /// [`Crash::Kill`] it does not return at all).
    pub fn wrote(&mut self) -> Result<(), Crashed> {
        let Some(fault) = self.fault else { return Ok(()) };
        if self.fired {
            return Err(Crashed { step: fault.step.name(), write: fault.write });
        }
        if self.step != Some(fault.step) {
            return Ok(());
        }
        self.writes += 1;
        if self.writes < fault.write {
            return Ok(());
        }
        self.fired = true;
        if fault.crash == Crash::Kill {
            kill_self(fault);
        }
        Err(Crashed { step: fault.step.name(), write: fault.write })
    }

    /// Whether the fault fired (a test's loop ends when it no longer does).
    pub fn fired(&self) -> bool {
        self.fired
    }
}

fn kill_self(fault: Fault) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!(
        "csi-migrate: {ENV}: dying after write {} of step {} {} (SIGKILL)",
        fault.write,
        fault.step.number(),
        fault.step.name()
    );
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // Not reached: SIGKILL cannot be caught.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_a_step_name_or_number_and_an_optional_write_number() {
        let f = |s: &str| s.parse::<Fault>().map(|f| (f.step, f.write));
        assert_eq!(f("delete-flex-pv"), Ok((Step::DeleteFlexPv, 1)));
        assert_eq!(f("delete-flex-pv:2"), Ok((Step::DeleteFlexPv, 2)));
        assert_eq!(f("7:3"), Ok((Step::CreateCsiPv, 3)));
        assert!(matches!(f("delete"), Err(ParseError::UnknownStep(_))));
        assert!(matches!(f("delete-flex-pv:0"), Err(ParseError::BadWrite(_))));
        assert!(matches!(f("delete-flex-pv:x"), Err(ParseError::BadWrite(_))));
    }

    #[test]
    fn the_fault_fires_once_at_its_write_and_every_later_write_fails() {
        let mut t = Tracker::new(Some(Fault { step: Step::DeleteFlexPv, write: 2, crash: Crash::Return }));
        t.enter(Some(Step::SaveOriginal));
        assert!(t.wrote().is_ok() && t.wrote().is_ok(), "other steps do not count");
        t.enter(Some(Step::DeleteFlexPv));
        assert!(t.wrote().is_ok());
        assert!(!t.fired());
        assert_eq!(t.wrote(), Err(Crashed { step: "delete-flex-pv", write: 2 }));
        assert!(t.fired());
        t.enter(None);
        assert!(t.wrote().is_err(), "the process is dead: nothing more is written");
    }

    #[test]
    fn without_a_fault_nothing_fires() {
        let mut t = Tracker::new(None);
        t.enter(Some(Step::DeleteFlexPv));
        assert!((0..100).all(|_| t.wrote().is_ok()));
    }
}
