//! Every privileged or unsafe syscall lockd makes, behind small safe functions.
//!
//! The state machine above this module never touches libc directly, so it can be read (and
//! tested) without root.

pub mod spawn;
pub mod users;
