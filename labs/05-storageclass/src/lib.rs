//! Lab 05 (being written)
