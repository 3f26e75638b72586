//! (issue 10: being built; see src/wifi/mod.rs)
