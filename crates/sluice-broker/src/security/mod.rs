//! Security (issue 17): SASL/SCRAM credentials and their exchange. Pure
//! parts first; listeners, TLS and authorization build on them.

pub mod credentials;
pub mod scram;
