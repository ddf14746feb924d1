//! The link between an estate and the regional centre: the versioned wire schema
//! (`schema`) and the estate's side of it (`estate`: what it publishes, durably and in order).

pub mod estate;
pub mod schema;
