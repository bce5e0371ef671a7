//! Placeholder until the formatter lands.
