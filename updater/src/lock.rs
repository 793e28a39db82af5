//! The process lock, so that two upd never act at once.
