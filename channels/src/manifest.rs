//! The channel manifest schema and its strict validation.
