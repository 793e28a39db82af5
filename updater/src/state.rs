//! The versioned state file: generations, highest manifest serial seen, switch journal, history.
