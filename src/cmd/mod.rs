//! The client-side subcommands of `esc` (publish, fetch, tail, dlq) and how they read input and
//! print output; `main.rs` holds the argument definitions and the server-side commands.

pub mod cluster;
pub mod consumers;
pub mod dlq;
pub mod output;
pub mod payload;
pub mod publish;
pub mod read;
pub mod status;
pub mod tls;
pub mod topics;
