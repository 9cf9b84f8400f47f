//! The announcer publishes its table; responder threads read it. Writers publish,
//! readers read: a reader loads the current `Arc<Table>` without a lock and keeps
//! that snapshot for one frame, so a reply never waits for the announcer (which
//! sends gratuitous frames and joins multicast groups while it holds its state).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::responder::Table;

/// The announcer's side: replaces the published table.
#[derive(Debug)]
pub struct TableWriter(Arc<ArcSwap<Table>>);

impl Default for TableWriter {
    fn default() -> Self {
        TableWriter(Arc::new(ArcSwap::from_pointee(Table::default())))
    }
}

impl TableWriter {
    /// Publish a copy of `table`; readers see it from their next load.
    pub fn publish(&self, table: &Table) {
        if **self.0.load() != *table {
            self.0.store(Arc::new(table.clone()));
        }
    }

    /// A reader of what this writer publishes.
    pub fn reader(&self) -> TableReader {
        TableReader(self.0.clone())
    }
}

/// A responder thread's side.
#[derive(Debug, Clone)]
pub struct TableReader(Arc<ArcSwap<Table>>);

impl TableReader {
    /// The table as last published (a guard: no reference count is touched).
    pub fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.0.load()
    }
}
