//! Untrusted names and relative paths from manifests, checked at the boundary.
