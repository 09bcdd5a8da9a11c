//! (placeholder: tests for this area are added by their owner)
