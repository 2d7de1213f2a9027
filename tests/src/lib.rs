//! End-to-end tests live in `tests/`; see the README.
