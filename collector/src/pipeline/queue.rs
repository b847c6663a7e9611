//! The bounded hand-off between request handlers and writers.
//!
//! Capacity is counted in events (rows plus dead letters), not batches, because memory and COPY time scale with
//! events. A full queue is an explicit error the handler turns into 503 + Retry-After: never a silent drop.
//!
//! With the durable spool (`pipeline::spool`, the default) a batch reaches the queue only once it is on disk;
//! when the queue is full the spool keeps it and feeds it back later ([`Queue::submit`] waits for room).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

    pub fn try_submit(&self, batch: Batch) -> Result<(), SubmitError> {
        self.submit_reserved(batch, None)
    }

    /// Queues `batch` if there is room now; otherwise gives it back.
    pub fn try_submit_or_return(&self, mut batch: Batch) -> Result<(), Box<Batch>> {
        let weight = batch.weight();
        if weight > self.capacity {
            return Err(Box::new(batch));
        }
        match self.permits.clone().try_acquire_many_owned(weight as u32) {
            Ok(permit) => {
                batch.permit = Some(permit);
                self.tx
                    .try_send(batch)
                    .map_err(|e| Box::new(e.into_inner()))
            }
            Err(_) => Err(Box::new(batch)),
        }
    }

    /// Room for about `events` events, taken before a request is decoded: when the queue is full, the request
    /// is answered 503 before it costs a decompression and a parse. [`Queue::submit_reserved`] settles it.
    pub fn reserve(&self, events: usize) -> Result<OwnedSemaphorePermit, SubmitError> {
        let n = u32::try_from(events.clamp(1, self.capacity.max(1))).unwrap_or(u32::MAX);
        self.permits
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| self.full())
    }

    /// Queues `batch` with the room `reserved` for it, taking what it lacks or giving back what it has over.
    pub fn submit_reserved(
        &self,
        mut batch: Batch,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<(), SubmitError> {
        let weight = batch.weight();
        if weight > self.capacity {
            return Err(SubmitError::TooLarge {
                weight,
                capacity: self.capacity,
            });
        }
        let held = reserved.as_ref().map_or(0, |p| p.num_permits());
        let permit = match reserved {
            Some(mut p) if held >= weight => {
                if held > weight {
                    drop(p.split(held - weight));
                }
                p
            }
            reserved => {
                let Ok(mut more) = self
                    .permits
                    .clone()
                    .try_acquire_many_owned((weight - held) as u32)
                else {
                    // The depth reported is without this request's own room.
                    drop(reserved);
                    return Err(self.full());
                };
                if let Some(p) = reserved {
                    more.merge(p);
                }
                more
            }
        };
        batch.permit = Some(permit);
        self.tx.try_send(batch).map_err(|_| SubmitError::Closed)
    }

    /// Queues `batch`, waiting for room (the spool feeding batches back from disk).
    pub async fn submit(&self, mut batch: Batch) -> Result<(), SubmitError> {
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
            .acquire_many_owned(weight as u32)
            .await
            .map_err(|_| SubmitError::Closed)?;
        batch.permit = Some(permit);
        self.tx.try_send(batch).map_err(|_| SubmitError::Closed)
    }

    fn full(&self) -> SubmitError {
        SubmitError::Full {
            depth: self.depth(),
            capacity: self.capacity,
        }
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
