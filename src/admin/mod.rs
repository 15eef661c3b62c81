//! Commands that read or change what loads left in the target: [`status`] (where a load
//! stands, from the `ddb2pg` schema) and [`promote`] (swap a loaded staging schema in, and
//! back).

pub mod carry;
pub mod promote;
pub mod status;
