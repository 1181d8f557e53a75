//! MCP upstreams: the servers named in the configuration, reached through rmcp's client service
//! (a Streamable HTTP session's requests go out on the caller's own task, see `upstream/http.rs`).
//!
//! - `upstream/`: the only code that talks to MCP servers, one file per transport (`stdio.rs`
//!   starts a child process, `http.rs` speaks Streamable HTTP), plus `link.rs`, which records
//!   what a broken connection had delivered.
//! - `session.rs`: one live session: requests with a deadline, cancellation when the caller
//!   goes away or the deadline passes, the cached tool list, idle time.
//! - `handler.rs`: what the proxy does with server notifications (progress, list changes).
//! - `pool.rs`: one session per server, opened lazily, replaced when it breaks, closed when idle.
//! - `gateway.rs`: the MCP server at `/mcp` that offers every server the caller may use as one.
//!
//! Requests and answers are rmcp's model types, passed through unchanged; errors become the
//! shared taxonomy (`ApiError`).

pub mod gateway;
mod handler;
mod pool;
mod session;
mod upstream;

pub use pool::{McpPool, ToolEventStream};
