//! Deterministic simulation harness for EventStreamCore.
