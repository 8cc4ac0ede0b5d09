//! The durable pinset state machine. Filled in by the state work.
