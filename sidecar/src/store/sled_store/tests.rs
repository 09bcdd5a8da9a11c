//! The sled store against real files in a temporary directory.
