//! ELF objects (being written).
