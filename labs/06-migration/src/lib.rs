//! Lab 06 (being written)
