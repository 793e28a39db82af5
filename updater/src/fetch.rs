//! Streaming downloads: hash and size limit in flight, .partial files, Range resume, retries, stall timeout.
