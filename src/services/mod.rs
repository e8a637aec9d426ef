//! The node's services (the seed's names): Seeder, Finder, Synchronizer, Shipper, and the supervisor that
//! runs them.

pub mod finder;
pub mod monitor;
pub mod retention;
pub mod seeder;
pub mod shipper;
pub mod supervisor;
pub mod sync;
