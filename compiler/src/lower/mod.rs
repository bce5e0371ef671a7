//! Lowering (being written).
