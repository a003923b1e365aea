//! # tidings-query
//!
//! The read side of the seed design's message servers: index first, then bodies, merged.
//! [`feed::read`] serves one page of a home, user or notification feed from a store snapshot
//! (merging pulled authors into home feeds); [`cache`] keeps pages, validated by feed versions;
//! [`notify`] counts and marks notifications; [`http`] serves it all.

pub mod cache;
pub mod feed;
pub mod http;
pub mod notify;

pub use feed::{read, FeedRequest, QueryError, ReadConfig};
