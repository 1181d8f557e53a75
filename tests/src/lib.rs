//! Test equipment for Switchyard. Nothing in this crate is product code.
//!
//! The centrepiece is [`fake_llm`], a deterministic, scripted implementation of
//! the OpenAI chat-completions wire format that integration and browser tests
//! point the proxy (or the SDK) at instead of a real provider. [`mcp_server`] is its MCP
//! counterpart: an `rmcp` server with deterministic tools, resources and prompts, and
//! [`fake_anthropic`] and [`fake_gemini`] speak Anthropic's Messages API and Google's Gemini
//! API, with what they share in [`fake_stream`]. [`redis_server`] runs Debian's `redis-server`
//! for the suites that run several proxy instances.

pub mod fake_anthropic;
pub mod fake_gemini;
pub mod fake_llm;
pub mod fake_stream;
pub mod latency;
pub mod mcp_server;
pub mod redis_server;
