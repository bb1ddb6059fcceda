//! A LinkedIn stand-in (placeholder; being written).
