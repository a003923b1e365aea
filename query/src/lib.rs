//! # tidings-query
//!
//! The read side of the seed design's message servers: index first, then bodies, merged.
//! [`feed::read`] serves one page of a home, user or notification feed from a store snapshot;
//! the HTTP API (axum) and the page cache build on it.

pub mod feed;
pub mod http;

pub use feed::{read, FeedRequest, QueryError};
