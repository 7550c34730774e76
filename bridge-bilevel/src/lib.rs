//! bridge-bilevel
