//! upd end-to-end suites, compiled into one test binary; one line per module says what it covers.
