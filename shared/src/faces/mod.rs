//! The standard wire formats the proxy serves besides its own API, for clients that already
//! speak them. Only the proxy uses these; the SDK's build leaves them out as unused code.

pub mod openai;
