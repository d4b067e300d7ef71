//! Durable writes with group commit (being written).
