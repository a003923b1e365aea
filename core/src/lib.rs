//! # tidings-core
//!
//! The domain of tidings without any I/O: events ([`event`]), their validation ([`validate`]),
//! the store key layout with one module per keyspace ([`keys`]), the mutations plans are made
//! of ([`write`]), fan-out planning ([`fanout`]), the processor chain of business rules run
//! before it ([`process`]), feed page assembly with read-time filtering and aggregation
//! ([`page`]), the [`Clock`](clock::Clock), and the run-time switches an operator flips
//! ([`control`]).
//!
//! Nothing here touches tokio, Kafka or a database: adapters (`tidings-store`,
//! `tidings-consumers`, `tidings-query`) depend on this crate, never the other way round, and
//! everything here is tested with plain `#[test]`s.
//!
//! Non-goals: wire encoding (that is `tidings-schemas`), transactions and I/O (the `Store` port
//! in `tidings-store`).

pub mod clock;
pub mod control;
pub mod event;
pub mod fanout;
pub mod keys;
pub mod page;
pub mod process;
pub mod time;
pub mod validate;
pub mod write;

pub use event::{
    Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, Update, UserId,
};
pub use write::Mutation;
