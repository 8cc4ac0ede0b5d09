//! The pin tracker. Filled in by the tracker work.
