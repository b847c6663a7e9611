//! The memory budget of ingest: bytes of request bodies being read and decompressed, and of batches (their
//! text and encoded rows) waiting for the writers, counted together under one bound. A request that would pass
//! it is answered 503 with Retry-After before it grows further, so memory stays under the budget plus fixed
//! costs (README, "Memory").

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units are KiB: permits count in u32, and a request holds up to a few hundred MiB.
const UNIT: usize = 1024;

/// The budget, shared by every request and batch.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    bytes: usize,
}

/// The budget is spent: the request is refused (503), not queued behind others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the collector holds its whole ingest memory budget ({budget} bytes, COLLECTOR_MEMORY_BUDGET_BYTES) in \
     requests and queued batches; retry shortly"
)]
pub struct OverBudget {
    pub budget: usize,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> MemoryBudget {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        MemoryBudget {
            units: Arc::new(Semaphore::new(units)),
            bytes,
        }
    }

    /// An empty reservation, grown as the request's data arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: None,
            units: 0,
        }
    }

    /// Bytes reserved now, by every request and queued batch.
    pub fn in_use(&self) -> usize {
        let total = self.bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        (total - self.units.available_permits()) * UNIT
    }
}

/// What one request or batch holds of the budget; released when dropped (for a batch: once committed).
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    held: Option<OwnedSemaphorePermit>,
    units: usize,
}

impl Reservation {
    /// Holds `bytes` in all, taking more of the budget when needed; never waits.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let want = bytes.div_ceil(UNIT);
        if want <= self.units {
            return Ok(());
        }
        let more = u32::try_from(want - self.units).map_err(|_| self.over())?;
        let permit = self
            .budget
            .units
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| self.over())?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.units = want;
        Ok(())
    }

    /// Holds `bytes` at most, giving the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        let want = bytes.div_ceil(UNIT);
        if want >= self.units {
            return;
        }
        if let Some(held) = &mut self.held {
            drop(held.split(self.units - want));
        }
        self.units = want;
    }

    fn over(&self) -> OverBudget {
        OverBudget {
            budget: self.budget.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(10 * UNIT);
        let mut a = budget.reservation();
        a.grow_to(6 * UNIT).unwrap();
        let mut b = budget.reservation();
        assert_eq!(b.grow_to(5 * UNIT), Err(OverBudget { budget: 10 * UNIT }));
        b.grow_to(4 * UNIT).unwrap();
        assert_eq!(budget.in_use(), 10 * UNIT);
        a.shrink_to(UNIT + 1);
        assert_eq!(budget.in_use(), 6 * UNIT);
        drop(b);
        assert_eq!(budget.in_use(), 2 * UNIT);
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }
}
