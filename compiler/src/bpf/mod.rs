//! BPF instructions (being written).
