//! Use cases: each validates through `domain`, runs its transaction through `store`,
//! and is what the gRPC adapters call.

pub mod callers;
pub mod clock;
pub mod orgs;

pub use clock::{Clock, SystemClock};
pub use orgs::OrgService;
