//! The memory budget of one query.
//!
//! One user query (a flame graph, a diff, a series request) may run as several parts: split
//! intervals, the two sides of a diff, the legacy render's tree and timelines. They all draw on
//! one [`QueryBudget`], created per request by the API (`QueryFrontend::budget`): a DataFusion memory pool of `--querier.max-query-memory` bytes that every
//! operator of every part reserves from, and so do the structures the read path builds outside
//! DataFusion (the symbolize node's call tree, decoded and merged trees, series label sets).
//! A query that needs more fails with `resource_exhausted`; the process stays up.

use std::sync::Arc;

use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryPool, MemoryReservation,
};

use crate::error::QueryError;
use profusion_model::status::StatusCode;
use profusion_model::tree::TreeError;

/// The granularity of [`QueryBudget::hold`].
const HOLD_STEP: usize = 64 * 1024;

/// A memory pool shared by every part of one query.
#[derive(Debug, Clone)]
pub struct QueryBudget {
    pool: Arc<dyn MemoryPool>,
    bytes: usize,
}

impl QueryBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            pool: Arc::new(FairSpillPool::new(bytes)),
            bytes,
        }
    }

    /// The budget's size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The pool, for a DataFusion runtime.
    pub fn pool(&self) -> Arc<dyn MemoryPool> {
        Arc::clone(&self.pool)
    }

    /// A reservation named after what it holds; freed when dropped.
    pub fn reservation(&self, holder: &str) -> MemoryReservation {
        MemoryConsumer::new(holder).register(&self.pool)
    }

    /// The error of a structure that outgrew the budget.
    pub fn exceeded(&self, what: &str, bytes: usize) -> QueryError {
        QueryError {
            source: None,
            status: StatusCode::ResourceExhausted,
            message: format!(
                "the query needs more memory than its budget of {} bytes (--querier.max-query-memory): \
                 {what} alone would hold {bytes} bytes; narrow the time range or the selector",
                self.bytes
            ),
        }
    }

    /// Makes `reservation` hold at least `bytes`, or the budget error naming `what`. It grows
    /// in steps of [`HOLD_STEP`] and never shrinks, so callers may report every small increase
    /// without going to the pool each time.
    pub fn hold(
        &self,
        reservation: &mut MemoryReservation,
        what: &str,
        bytes: usize,
    ) -> Result<(), QueryError> {
        if bytes <= reservation.size() {
            return Ok(());
        }
        reservation
            .try_resize(bytes.next_multiple_of(HOLD_STEP))
            .map_err(|_| self.exceeded(what, bytes))
    }

    /// A charge for [`profusion_model::tree::Tree`]'s growth into `reservation`.
    pub fn tree_charge<'a>(
        &'a self,
        reservation: &'a mut MemoryReservation,
    ) -> impl FnMut(usize) -> Result<(), TreeError> + 'a {
        move |bytes| {
            self.hold(reservation, "the flame-graph tree", bytes)
                .map_err(|e| TreeError::OverBudget(e.message))
        }
    }
}

/// A query's answer with the memory it holds, charged to its budget until dropped.
#[derive(Debug)]
pub struct Charged<T> {
    pub value: T,
    /// Held, not read: dropping it returns the memory to the budget.
    _reservation: MemoryReservation,
}

impl<T> Charged<T> {
    pub fn new(value: T, reservation: MemoryReservation) -> Self {
        Self {
            value,
            _reservation: reservation,
        }
    }
}
