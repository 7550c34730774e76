//! A deterministic step budget: every parse, evaluation and comparison step
//! spends fuel, so the cost of one check is bounded without reading a clock.

/// The step budget ran out before the work finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exhausted;

/// Remaining steps for one check.
#[derive(Clone, Debug)]
pub(crate) struct Fuel {
    left: u64,
}

impl Fuel {
    pub(crate) fn new(steps: u64) -> Fuel {
        Fuel { left: steps }
    }

    /// Spends `n` steps, failing when fewer are left.
    pub(crate) fn spend(&mut self, n: u64) -> Result<(), Exhausted> {
        if self.left < n {
            self.left = 0;
            return Err(Exhausted);
        }
        self.left -= n;
        Ok(())
    }

    /// Spends one step.
    pub(crate) fn step(&mut self) -> Result<(), Exhausted> {
        self.spend(1)
    }
}
