//! The bounded hand-off between request handlers and writers.
//!
//! Capacity is counted in events (rows plus dead letters), not batches, because memory and COPY time scale with
//! events. A full queue is an explicit error the handler turns into 503 + Retry-After: never a silent drop.
//!
//! Seam for the durable spool: a spool sits in front of [`Queue::try_submit`], appending the batch to disk
//! before the request is acknowledged and feeding the queue from disk; writers and handlers stay as they are.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::pipeline::batch::Batch;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("ingest queue is full ({depth} of {capacity} events waiting for the database)")]
    Full { depth: usize, capacity: usize },
    #[error(
        "a batch of {weight} events is larger than the whole ingest queue ({capacity} events)"
    )]
    TooLarge { weight: usize, capacity: usize },
    #[error("the collector is shutting down")]
    Closed,
}

#[derive(Clone)]
pub struct Queue {
    tx: async_channel::Sender<Batch>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

pub type QueueReceiver = async_channel::Receiver<Batch>;

impl Queue {
    pub fn new(capacity: usize) -> (Queue, QueueReceiver) {
        // The channel itself is unbounded: the semaphore is the bound, in events.
        let (tx, rx) = async_channel::unbounded();
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        (
            Queue {
                tx,
                permits: Arc::new(Semaphore::new(capacity)),
                capacity,
            },
            rx,
        )
    }

    pub fn try_submit(&self, mut batch: Batch) -> Result<(), SubmitError> {
        let weight = batch.weight();
        if weight > self.capacity {
            return Err(SubmitError::TooLarge {
                weight,
                capacity: self.capacity,
            });
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(weight as u32)
            .map_err(|_| SubmitError::Full {
                depth: self.depth(),
                capacity: self.capacity,
            })?;
        batch.permit = Some(permit);
        self.tx.try_send(batch).map_err(|_| SubmitError::Closed)
    }

    /// Events accepted but not yet committed.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops accepting; writers drain what is queued and then see the channel end.
    pub fn close(&self) {
        self.tx.close();
    }
}
